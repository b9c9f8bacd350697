/*
 * endpoints.h - what the per-model service (service.h) and the registry above it
 * (registry.h) share: the endpoints and how paths map to them, requests and responses as
 * a transport sees them, error answers, request counting and logging, the bearer token.
 */
#ifndef BERTH_ENDPOINTS_H
#define BERTH_ENDPOINTS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/error.h"
#include "serving/buffer.h"
#include "serving/metrics.h"

/* Every endpoint, as counted in berth_requests_total{endpoint=...}. */
enum {
    BT_EP_LIVE,
    BT_EP_READY,
    BT_EP_SERVER_META,
    BT_EP_MODEL_META,
    BT_EP_MODEL_READY,
    BT_EP_INFER,
    BT_EP_V1_META,
    BT_EP_V1_PREDICT,
    BT_EP_METRICS,
    BT_EP_MODEL_CONFIG,
    BT_EP_STATS,
    BT_EP_REPO_INDEX,
    BT_EP_REPO_LOAD,
    BT_EP_REPO_UNLOAD,
    BT_EP_OTHER,
    BT_N_EP
};

extern const char *const BT_EP_NAMES[BT_N_EP];

/* A path split into its endpoint, model name and version (pointers into the path, with
 * lengths; NULL when the path names none). */
typedef struct bt_route {
    int ep;
    const char *name;
    size_t name_len;
    const char *version;
    size_t version_len;
} bt_route;

void bt_route_path(const char *path, bt_route *r);

/* Whether the endpoint is a model's own (its name in the path) rather than the server's. */
int bt_endpoint_is_model(int ep);

/* A request as a transport sees it. Header values are NULL when absent. */
typedef struct bt_http_request {
    const char *method;
    const char *path; /* without the query string */
    const char *content_type;
    const char *authorization;
    const char *header_length;    /* Inference-Header-Content-Length */
    const char *content_encoding; /* gzip/deflate bodies are inflated before parsing */
    const char *body;
    size_t body_len;
    size_t max_body; /* limit on the inflated body; 0: BT_DEFAULT_MAX_BODY */
    double received; /* bt_now() when the whole request was read; 0: now */
} bt_http_request;

/* The largest request body by default (--max-body-mb's default). */
#define BT_DEFAULT_MAX_BODY ((size_t)64 << 20)

typedef struct bt_http_response {
    int status;
    const char *content_type;     /* static string */
    long long header_length;      /* Inference-Header-Content-Length to send; -1: none */
    int retry_after;              /* seconds for Retry-After; 0: none */
    int www_authenticate;         /* send WWW-Authenticate: Bearer */
    const char *allow;            /* Allow header for 405; NULL: none */
    const char *content_encoding; /* "gzip" once bt_http_response_compress did; NULL: none */
    bt_buf body;                  /* owned by whoever holds the response */
} bt_http_response;

/* Receives the finished response of a submitted job; takes ownership of resp->body. */
typedef void (*bt_response_fn)(void *ctx, bt_http_response *resp);

/* Gzips resp's body when accept_encoding (the request's Accept-Encoding, NULL when
 * absent) takes gzip and the body is big enough to gain (encoding.h). Transports call it
 * on their own thread just before sending, so no batcher thread spends time on it. */
void bt_http_response_compress(bt_http_response *resp, const char *accept_encoding);

/* 200, application/json, no body. */
void bt_response_init(bt_http_response *r);
/* Replaces the body with {"error": message}. */
void bt_response_error(bt_http_response *r, int status, const char *message);
void bt_response_errorf(bt_http_response *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The status for an error: client faults 4xx, the model's and the server's 5xx. */
int bt_status_for(bt_error_kind kind);
void bt_response_from_error(bt_http_response *r, const bt_error *err);
/* The 401 for a missing or wrong bearer token. */
void bt_response_unauthorized(bt_http_response *r, const char *authorization);

/* Whether `authorization` is "Bearer <token>" (compared in constant time); a NULL token
 * admits everything. */
int bt_token_ok(const char *token, size_t token_len, const char *authorization);

/* One request-log line on stderr; control bytes are written as \xNN. */
void bt_log_request(const char *line, int status, double seconds);

#define BT_N_CODES 600

/* Requests by endpoint and status code, and their latency. */
typedef struct bt_traffic {
    _Atomic uint64_t counts[BT_N_EP][BT_N_CODES];
    bt_histogram latency[BT_N_EP];
} bt_traffic;

void bt_traffic_init(bt_traffic *t);
void bt_traffic_record(bt_traffic *t, int ep, int status, double seconds);
/* Records a request answered now that began at start (bt_now()), and logs "METHOD PATH"
 * when log_requests. */
void bt_traffic_finish(bt_traffic *t, int log_requests, int ep, double start,
                       const bt_http_request *req, int status);
/* Appends the berth_requests_total samples (no HELP/TYPE); labels "" or `a="b",c="d"`. */
void bt_traffic_render_counts(bt_traffic *t, const char *labels, bt_buf *out);
/* Appends the berth_request_duration_seconds histograms; *first: whether the family's
 * HELP/TYPE lines are still to be written (cleared once they are). */
void bt_traffic_render_latency(bt_traffic *t, const char *labels, int *first, bt_buf *out);

#define BT_REQUESTS_HELP                                                                           \
    "# HELP berth_requests_total HTTP requests by endpoint and status code.\n"                     \
    "# TYPE berth_requests_total counter\n"

#endif /* BERTH_ENDPOINTS_H */
