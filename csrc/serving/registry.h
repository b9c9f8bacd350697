/*
 * registry.h - the models a server serves, by name and version, and the server's own
 * endpoints above them: health, server metadata, /metrics, statistics and Triton's model
 * repository extension. Both transports talk to a registry: the C server (server.h) from
 * libmicrohttpd's threads, the Flask/FastAPI adapters through bt_registry_handle_sync.
 *
 * Endpoints (Open Inference Protocol v2 with Triton's model configuration, statistics and
 * model repository extensions, KServe v1, Prometheus):
 *   GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/stats, /metrics
 *   GET  /v2/models/{name}[/versions/{v}], .../ready, .../config, .../stats
 *   POST /v2/models/{name}[/versions/{v}]/infer
 *   GET  /v1/models/{name}; POST /v1/models/{name}:predict
 *   POST /v2/repository/index, /v2/repository/models/{name}/load, .../unload
 * A path without a version reaches the model's newest ready version (its newest when none
 * is ready). Every endpoint but liveness and readiness requires the bearer token when
 * one is set, and is checked before anything that could reveal a model's name.
 *
 * Versions come and go while requests run: bt_registry_remove takes a version off the
 * routes at once, then waits until every request that reached it is answered, so a
 * request finishes on the version it started on. The repository extension's requests
 * are handed to whoever calls bt_registry_next_control (berth's serve runs them in
 * Python: loading a model is loading, checking and warming up a file) and answered with
 * bt_registry_answer_control.
 */
#ifndef BERTH_REGISTRY_H
#define BERTH_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "serving/endpoints.h"
#include "serving/service.h"

typedef struct bt_registry bt_registry;
typedef struct bt_control bt_control;

typedef struct bt_registry_params {
    const char *auth_token; /* bearer token (copied); NULL or "": no auth */
    int log_requests;       /* one line per request on stderr */
    int strict_readiness;   /* ready only when every version is (and set_ready said so) */
    int control;            /* queue /v2/repository/... for bt_registry_next_control; 0: 404 */
} bt_registry_params;

int bt_registry_create(const bt_registry_params *params, bt_registry **out, bt_error *err);
/* Answers queued control requests 503 and frees. The services are not freed (their
 * owner removes them first). NULL-tolerant. */
void bt_registry_free(bt_registry *reg);

/* Serves svc as its model's version; err when that name and version is served already. */
int bt_registry_add(bt_registry *reg, bt_service *svc, bt_error *err);
/* Takes name/version off the routes, then waits until every request that reached it is
 * answered; past grace_s those still running are answered 503 (their forwards finish and
 * are discarded). Returns the service, for its owner to free, or NULL when not served. */
bt_service *bt_registry_remove(bt_registry *reg, const char *name, int64_t version, double grace_s);
/* Serves svc in place of the version of the same name and number, atomically (no
 * request finds neither), then drains the old one as bt_registry_remove does and
 * returns it. NULL with err set when that version is not served. */
bt_service *bt_registry_replace(bt_registry *reg, bt_service *svc, double grace_s, bt_error *err);
/* Number of versions served. */
size_t bt_registry_count(bt_registry *reg);

/* Whether everything that should be loaded is (the owner's word; 1 at creation); reason
 * is what /v2/health/ready says while it is not (copied). */
void bt_registry_set_loaded(bt_registry *reg, int loaded, const char *reason);
/* /v2/health/ready's answer: not draining, and with strict readiness, loaded and every
 * version ready. */
int bt_registry_ready(bt_registry *reg);

/* Routes req. Returns 0 when *resp holds the answer, or 1 when the answer comes later:
 * pass *call to bt_registry_submit. The request's strings need only live for this call. */
typedef struct bt_call {
    bt_service *svc;
    bt_job *job;
    bt_control *control;
} bt_call;

int bt_registry_begin(bt_registry *reg, const bt_http_request *req, bt_http_response *resp,
                      bt_call *call);
/* done(ctx, resp) is called exactly once, from this thread or another. */
void bt_registry_submit(bt_registry *reg, bt_call *call, bt_response_fn done, void *ctx);
/* begin + submit + wait. Blocks the calling thread. */
void bt_registry_handle_sync(bt_registry *reg, const bt_http_request *req, bt_http_response *resp);

/* Records a response the transport produced itself (413 during upload, say). */
void bt_registry_record(bt_registry *reg, const char *path, int status, double seconds);
/* Appends the Prometheus text of /metrics. */
void bt_registry_metrics(bt_registry *reg, bt_buf *out);

/* Shutdown: readiness fails at once (every version's too). */
void bt_registry_drain(bt_registry *reg);
/* Shutdown past its grace period: every version's unanswered requests and every control
 * request get 503 now; new ones get 503 at once. */
void bt_registry_expire_all(bt_registry *reg);

/* A repository extension request, as bt_registry_next_control hands it out. */
typedef struct bt_control_request {
    uint64_t id;
    const char *action; /* "index", "load" or "unload" */
    const char *model;  /* "" for index */
    const char *body;   /* the request body (JSON or empty), NUL-terminated */
    size_t body_len;
} bt_control_request;

/* Waits up to timeout_s for a control request. 1: *out holds one (its strings live until
 * it is answered); 0: none came; -1: the registry is shutting down. */
int bt_registry_next_control(bt_registry *reg, double timeout_s, bt_control_request *out);
/* Answers control request `id` with status and a JSON body. -1 when it is not waiting
 * (answered 503 at shutdown already). */
int bt_registry_answer_control(bt_registry *reg, uint64_t id, int status, const char *body,
                               size_t len);

#endif /* BERTH_REGISTRY_H */
