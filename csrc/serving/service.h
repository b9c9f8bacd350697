/*
 * service.h - one model version served: its endpoints (metadata, readiness, config,
 * statistics, inference over the Open Inference Protocol v2 and KServe v1), the codec,
 * its batcher and deadline timer, warm-up, and its metrics. No transport and no routing
 * between models: the registry (registry.h) finds the service a request is for and
 * calls bt_service_begin; the C server and the Flask/FastAPI adapters talk to the
 * registry.
 */
#ifndef BERTH_SERVICE_H
#define BERTH_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/batcher.h"
#include "runtime/error.h"
#include "runtime/model.h"
#include "serving/codec.h"
#include "serving/endpoints.h"

typedef struct bt_service bt_service;
typedef struct bt_job bt_job;

typedef struct bt_service_params {
    const char *name;                /* model name in URLs (copied) */
    int64_t version;                 /* >= 1; 0 is taken as 1 */
    const char *version_policy_json; /* Triton's version_policy object for /config (copied);
                                      * NULL: {"specific":{"versions":[version]}} */
    bt_batcher_params batch;         /* batcher settings */
    int log_requests;                /* one line per request on stderr */
    double timeout_ms;         /* deadline per request from bt_service_begin; <= 0: none. Met by a
                                * timer whatever the forward is doing (answered 503) */
    int64_t max_rows;          /* rows (leading extent) per request; <= 0: BT_DEFAULT_MAX_ROWS */
    size_t max_response_bytes; /* largest response; 0: BT_DEFAULT_MAX_RESPONSE_BYTES */
} bt_service_params;

/* Limits: each default is defined here once; the Python CLI reads them from _core. */
#define BT_DEFAULT_MAX_ROWS           ((int64_t)65536)
#define BT_DEFAULT_MAX_RESPONSE_BYTES ((size_t)64 << 20)

int bt_service_create(bt_model *model, const bt_service_params *params, bt_service **out,
                      bt_error *err);
/* Stops the batcher (finishing queued work) and frees. NULL-tolerant. Call once no
 * request can reach it and bt_service_pending is 0 (bt_registry_remove waits for that). */
void bt_service_free(bt_service *svc);

const char *bt_service_name(const bt_service *svc);
const char *bt_service_version(const bt_service *svc); /* decimal */
const bt_model *bt_service_model(const bt_service *svc);
/* The versions model metadata lists (the registry's, for this model). -1 out of memory. */
int bt_service_set_versions(bt_service *svc, const int64_t *versions, size_t n);

void bt_service_set_ready(bt_service *svc, int ready);
int bt_service_ready(const bt_service *svc);
/* Why the version is not ready (warming up, failed at start, shutting down). */
const char *bt_service_ready_reason(const bt_service *svc);
int bt_service_batching(const bt_service *svc);
bt_batcher *bt_service_batcher(bt_service *svc);
/* Requests begun and not yet answered. */
int64_t bt_service_pending(const bt_service *svc);

/* Marks the model as failed at start (warm-up failed): readiness stays off and the ready
 * endpoints say why (message copied). Call before readiness, from one thread. */
void bt_service_set_failed(bt_service *svc, const char *message);

/* Runs batches of the signature's shape through the batcher: batch 1 `rounds` times, then, when batching, either
 * tunes the batch limit (tune = 1: the batch-1 rounds start the batcher's climb,
 * runtime/tuner.h, and unless the forwards left in the climb at the last round's cost
 * alone exceed budget_s seconds, the sizes it times next run while it stays within
 * budget_s; what is left of it is timed on served batches after readiness) or runs one
 * batch of max_batch_size rows. Returns 1 when it ran, 0 when the signature lacks dtypes or shapes
 * (nothing to warm up with), -1 with err set when forward failed (the service is then
 * marked failed: see bt_service_set_failed). *seconds gets the time. The statistics
 * extension's counters start when it returns. Call before readiness turns on, from one
 * thread. */
int bt_service_warmup(bt_service *svc, int rounds, int tune, double budget_s, double *seconds,
                      bt_error *err);

/* Warm-up's rounds of 1 row, by default: TorchScript's profiling executor profiles the
 * first call and builds the optimized plan in the second, which every later call runs
 * (resnet18 optimized, on one CPU: 60, 27, then 23 ms a forward). */
#define BT_WARMUP_ROUNDS 2

/* Seconds of batch tuning warm-up spends before readiness after its rounds, by default:
 * ten times what the seed MLP's whole climb takes (28 forwards of microseconds), while a
 * model whose climb would take longer (resnet18 on one CPU: 23 ms a row, seconds to
 * climb) goes ready right after its rounds and climbs on served batches, instead of 16 s
 * of zero batches. */
#define BT_TUNE_READY_SECONDS 0.05

/* Answers a request the registry routed here: `ep` is one of the model endpoints
 * (bt_endpoint_is_model, or BT_EP_STATS for this model's). Returns 0 when *resp holds the
 * answer, or 1 when the answer needs a forward: pass *job to bt_service_submit. The
 * request's strings need only live for this call. */
int bt_service_begin(bt_service *svc, int ep, const bt_http_request *req, bt_http_response *resp,
                     bt_job **job);

/* Queues job; done(ctx, resp) is called exactly once: from this thread when the job
 * cannot be queued (overload), else from the batcher's thread. */
void bt_service_submit(bt_service *svc, bt_job *job, bt_response_fn done, void *ctx);

/* Shutdown past its grace period: new inference requests get 503 at once, and every
 * request submitted and not yet answered is answered 503 now (its forward, if running,
 * finishes and is discarded). */
void bt_service_expire_all(bt_service *svc);

/* Appends this model version's entry of the statistics extension's model_stats. */
void bt_service_stats_json(bt_service *svc, bt_buf *out);

/* The metric families of a model version; the registry writes each family's HELP/TYPE
 * once, then every version's samples, labelled with its model and version. */
enum {
    BT_MF_REQUESTS,
    BT_MF_DURATION,
    BT_MF_INFLIGHT,
    BT_MF_QUEUE_SECONDS,
    BT_MF_COMPUTE_SECONDS,
    BT_MF_BATCH_SIZE,
    BT_MF_QUEUED,
    BT_MF_OVERLOADED,
    BT_MF_TIMEOUTS,
    BT_MF_RETRIES,
    BT_MF_EXPIRED,
    BT_MF_LOAD_SECONDS,
    BT_MF_WARMUP_SECONDS,
    BT_MF_MODEL_READY,
    BT_MF_BATCH_LIMIT,
    BT_MF_COUNT
};

typedef struct bt_metric_family {
    const char *name, *type, *help;
} bt_metric_family;

extern const bt_metric_family BT_SERVICE_METRICS[BT_MF_COUNT];

/* Appends the samples of one family (no HELP/TYPE lines); labels "" or `a="b",...`. */
void bt_service_metric(bt_service *svc, int family, const char *labels, bt_buf *out);

#endif /* BERTH_SERVICE_H */
