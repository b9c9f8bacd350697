/*
 * server.h - serving one model over HTTP: the service (routing, auth, codec, batcher,
 * metrics, readiness; no transport) and the libmicrohttpd server around it.
 *
 * The service is shared by both transports: the C server calls bt_service_begin and
 * bt_service_submit from libmicrohttpd's threads and suspends the connection while the
 * batch runs; the Flask/FastAPI adapters call bt_service_handle_sync from a worker
 * thread with the GIL released.
 *
 * Endpoints (Open Inference Protocol v2 with Triton's model configuration and statistics
 * extensions, KServe v1, Prometheus):
 *   GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/stats
 *   GET  /v2/models/{name}, /v2/models/{name}/ready, /v2/models/{name}/config,
 *        /v2/models/{name}/stats
 *   POST /v2/models/{name}/infer
 *        (each /v2/models/{name}/... also as /v2/models/{name}/versions/1/...; another
 *        version is 404)
 *   GET  /v1/models/{name}; POST /v1/models/{name}:predict
 *   GET  /metrics
 * Request bodies may be sent with Content-Encoding gzip or deflate; responses are gzipped
 * for Accept-Encoding: gzip (see encoding.h). Every error body is {"error": "..."}.
 * Client faults are 4xx; the model's and the server's are 5xx.
 */
#ifndef BERTH_SERVER_H
#define BERTH_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/batcher.h"
#include "serving/codec.h"
#include "runtime/error.h"
#include "runtime/model.h"

typedef struct bt_service bt_service;
typedef struct bt_job bt_job;
typedef struct bt_server bt_server;

typedef struct bt_service_params {
    const char *name;          /* model name in URLs (copied) */
    bt_batcher_params batch;   /* batcher settings */
    const char *auth_token;    /* bearer token (copied); NULL or "": no auth */
    int log_requests;          /* one line per request on stderr */
    double timeout_ms;         /* deadline per request from bt_service_begin; <= 0: none. Met by a
                                * timer whatever the forward is doing (answered 503) */
    int64_t max_rows;          /* rows (leading extent) per request; <= 0: BT_DEFAULT_MAX_ROWS */
    size_t max_response_bytes; /* largest response; 0: BT_DEFAULT_MAX_RESPONSE_BYTES */
} bt_service_params;

/* Limits: each default is defined here once; the Python CLI reads them from _core. */
#define BT_DEFAULT_MAX_ROWS ((int64_t)65536)
#define BT_DEFAULT_MAX_RESPONSE_BYTES ((size_t)64 << 20)
#define BT_DEFAULT_MAX_BODY_BYTES ((size_t)64 << 20)
#define BT_MAX_BODY_BYTES_LIMIT ((size_t)4 << 30) /* the largest --max-body-mb accepted */
#define BT_DEFAULT_BODY_BUDGET_FACTOR 4   /* memory for unfinished bodies: x max body */
#define BT_DEFAULT_PER_IP_CONNECTIONS 256
#define BT_DEFAULT_CONNECTION_LIMIT 1024
#define BT_DEFAULT_IDLE_TIMEOUT_S 60
#define BT_DEFAULT_HEADER_TIMEOUT_S 10
#define BT_MAX_HTTP_THREADS 1024
/* TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1). */
#define BT_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* Bodies larger than this are parsed on the server's parse thread, not on the HTTP thread
 * that received them (a 30 MB JSON body takes seconds to parse). */
#define BT_INLINE_PARSE_BYTES ((size_t)64 << 10)

/* A request as a transport sees it. Header values are NULL when absent. */
typedef struct bt_http_request {
    const char *method;
    const char *path;          /* without the query string */
    const char *content_type;
    const char *authorization;
    const char *header_length; /* Inference-Header-Content-Length */
    const char *content_encoding; /* gzip/deflate bodies are inflated before parsing */
    const char *body;
    size_t body_len;
    size_t max_body;           /* limit on the inflated body; 0: BT_DEFAULT_MAX_BODY */
    double received;           /* bt_now() when the whole request was read; 0: now */
} bt_http_request;

/* The largest request body by default (--max-body-mb's default). */
#define BT_DEFAULT_MAX_BODY ((size_t)64 << 20)

typedef struct bt_http_response {
    int status;
    const char *content_type;  /* static string */
    long long header_length;   /* Inference-Header-Content-Length to send; -1: none */
    int retry_after;           /* seconds for Retry-After; 0: none */
    int www_authenticate;      /* send WWW-Authenticate: Bearer */
    const char *allow;         /* Allow header for 405; NULL: none */
    const char *content_encoding; /* "gzip" once bt_http_response_compress did; NULL: none */
    bt_buf body;               /* owned by whoever holds the response */
} bt_http_response;

/* Gzips resp's body when accept_encoding (the request's Accept-Encoding, NULL when
 * absent) takes gzip and the body is big enough to gain (encoding.h). Transports call it
 * on their own thread just before sending, so no batcher thread spends time on it. */
void bt_http_response_compress(bt_http_response *resp, const char *accept_encoding);

/* Receives the finished response of a submitted job; takes ownership of resp->body. */
typedef void (*bt_response_fn)(void *ctx, bt_http_response *resp);

int bt_service_create(bt_model *model, const bt_service_params *params, bt_service **out,
                      bt_error *err);
/* Stops the batcher (finishing queued work) and frees. NULL-tolerant. */
void bt_service_free(bt_service *svc);

void bt_service_set_ready(bt_service *svc, int ready);
int bt_service_ready(const bt_service *svc);
int bt_service_batching(const bt_service *svc);
bt_batcher *bt_service_batcher(bt_service *svc);
/* Requests begun and not yet answered. */
int64_t bt_service_pending(const bt_service *svc);

/* Marks the model as failed at start (warm-up failed): readiness stays off and the ready
 * endpoints say why (message copied). Call before readiness, from one thread. */
void bt_service_set_failed(bt_service *svc, const char *message);

/* Runs batches of the signature's shape through the batcher: batch 1 `rounds` times (the
 * TorchScript executor optimises a shape after a few calls), then, when batching, either
 * tunes the batch limit (tune = 1: times batches of 1, 2, 4, ... max_batch_size rows and
 * keeps the smallest with about the cheapest rows; see bt_service_tuning) or runs one
 * batch of max_batch_size rows. Returns 1 when it ran, 0 when the signature lacks dtypes
 * or shapes (nothing to warm up with), -1 with err set when forward failed (the service
 * is then marked failed: see bt_service_set_failed). *seconds gets the time. The
 * statistics extension's counters start when it returns. Call before readiness turns on,
 * from one thread. */
int bt_service_warmup(bt_service *svc, int rounds, int tune, double *seconds, bt_error *err);

#define BT_TUNE_MAX_STEPS 24

typedef struct bt_batch_cost {
    int rows;
    double seconds_per_row; /* best of the timed forwards, divided by rows */
} bt_batch_cost;

/* The batch sizes warm-up timed, in order (0 when it did not tune). */
size_t bt_service_tuning(const bt_service *svc, const bt_batch_cost **costs);

/* Routes req. Returns 0 when *resp holds the answer, or 1 when the answer needs a
 * forward: pass *job to bt_service_submit. The request's strings need only live for
 * this call. */
int bt_service_begin(bt_service *svc, const bt_http_request *req, bt_http_response *resp,
                     bt_job **job);

/* Queues job; done(ctx, resp) is called exactly once: from this thread when the job
 * cannot be queued (overload), else from the batcher's thread. */
void bt_service_submit(bt_service *svc, bt_job *job, bt_response_fn done, void *ctx);

/* begin + submit + wait. Blocks the calling thread. */
void bt_service_handle_sync(bt_service *svc, const bt_http_request *req,
                            bt_http_response *resp);

/* Appends the Prometheus text of /metrics. */
void bt_service_metrics(bt_service *svc, bt_buf *out);

/* Records a response the transport produced itself (413 during upload, say). */
void bt_service_record(bt_service *svc, const char *path, int status, double seconds);

/* Shutdown past its grace period: new inference requests get 503 at once, and every
 * request submitted and not yet answered is answered 503 now (its forward, if running,
 * finishes and is discarded). */
void bt_service_expire_all(bt_service *svc);

typedef struct bt_server_params {
    const char *host;        /* "0.0.0.0", "127.0.0.1", "::" or a name */
    int port;                /* 0: any free port (see bt_server_port) */
    int threads;             /* HTTP threads, >= 1 */
    size_t max_body_bytes;   /* larger bodies get 413 */
    const char *tls_cert;    /* PEM text; NULL: plain HTTP */
    const char *tls_key;     /* PEM text */
    int connection_limit;    /* open connections at most */
    int idle_timeout_s;      /* close idle keep-alive connections after this */
    int per_ip_connections;  /* open connections per client address at most */
    int header_timeout_s;    /* a new connection must send its first request's headers in time */
    size_t body_budget;      /* bytes all unfinished request bodies may hold together (503) */
} bt_server_params;

/* Starts listening (readiness stays as the service says). */
int bt_server_start(bt_service *svc, const bt_server_params *params, bt_server **out,
                    bt_error *err);
int bt_server_port(const bt_server *srv);
/* Graceful stop: readiness fails at once, accepted requests finish (answers carry
 * Connection: close); at grace_s whatever is still unanswered gets 503 (forwards still
 * running are not waited for), then the listener closes. Returns within grace_s plus
 * about a second of flushing. Idempotent. */
void bt_server_drain(bt_server *srv, double grace_s);
/* Stops the daemon (after drain when called first). NULL-tolerant. */
void bt_server_free(bt_server *srv);

#endif /* BERTH_SERVER_H */
