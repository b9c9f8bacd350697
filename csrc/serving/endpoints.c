/*
 * endpoints.c - routes, error answers, request counting and logging shared by the
 * service and the registry.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "serving/endpoints.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/clock.h"
#include "serving/codec.h"
#include "serving/encoding.h"

const char *const BT_EP_NAMES[BT_N_EP] = {
    "health_live", "health_ready",     "server_metadata", "model_metadata",    "model_ready",
    "infer",       "v1_metadata",      "v1_predict",      "metrics",           "model_config",
    "statistics",  "repository_index", "repository_load", "repository_unload", "other"};

/* /v2/models/{name}[/versions/{v}]{rest}: rest's endpoint. */
static int model_route(const char *p, bt_route *r)
{
    const char *slash = strchr(p, '/');
    r->name = p;
    r->name_len = slash ? (size_t)(slash - p) : strlen(p);
    if (r->name_len == 0)
        return BT_EP_OTHER;
    const char *rest = slash ? slash : "";
    if (strncmp(rest, "/versions/", 10) == 0) {
        const char *v = rest + 10;
        const char *vs = strchr(v, '/');
        if (vs == v || !v[0])
            return BT_EP_OTHER;
        r->version = v;
        r->version_len = vs ? (size_t)(vs - v) : strlen(v);
        rest = vs ? vs : "";
    }
    if (rest[0] == '\0')
        return BT_EP_MODEL_META;
    if (strcmp(rest, "/ready") == 0)
        return BT_EP_MODEL_READY;
    if (strcmp(rest, "/infer") == 0)
        return BT_EP_INFER;
    if (strcmp(rest, "/config") == 0)
        return BT_EP_MODEL_CONFIG;
    if (strcmp(rest, "/stats") == 0)
        return BT_EP_STATS;
    return BT_EP_OTHER;
}

/* /v2/repository/models/{name}/load|unload */
static int repository_route(const char *p, bt_route *r)
{
    const char *slash = strchr(p, '/');
    if (!slash || slash == p)
        return BT_EP_OTHER;
    r->name = p;
    r->name_len = (size_t)(slash - p);
    if (strcmp(slash, "/load") == 0)
        return BT_EP_REPO_LOAD;
    if (strcmp(slash, "/unload") == 0)
        return BT_EP_REPO_UNLOAD;
    r->name = NULL;
    r->name_len = 0;
    return BT_EP_OTHER;
}

static int route(const char *path, bt_route *r)
{
    if (strcmp(path, "/v2/models/stats") == 0)
        return BT_EP_STATS; /* every model's; a model named "stats" keeps its other paths */
    if (strcmp(path, "/v2/health/live") == 0 || strcmp(path, "/") == 0) /* "/": KServe v1's */
        return BT_EP_LIVE;
    if (strcmp(path, "/v2/health/ready") == 0)
        return BT_EP_READY;
    if (strcmp(path, "/v2") == 0 || strcmp(path, "/v2/") == 0)
        return BT_EP_SERVER_META;
    if (strcmp(path, "/metrics") == 0)
        return BT_EP_METRICS;
    if (strcmp(path, "/v2/repository/index") == 0)
        return BT_EP_REPO_INDEX;
    if (strncmp(path, "/v2/repository/models/", 22) == 0)
        return repository_route(path + 22, r);
    if (strncmp(path, "/v2/models/", 11) == 0)
        return model_route(path + 11, r);
    if (strncmp(path, "/v1/models/", 11) == 0) {
        const char *p = path + 11;
        if (strchr(p, '/'))
            return BT_EP_OTHER;
        size_t n = strlen(p);
        r->name = p;
        if (n > 8 && strcmp(p + n - 8, ":predict") == 0) {
            r->name_len = n - 8;
            return BT_EP_V1_PREDICT;
        }
        r->name_len = n;
        return n ? BT_EP_V1_META : BT_EP_OTHER;
    }
    return BT_EP_OTHER;
}

void bt_route_path(const char *path, bt_route *r)
{
    memset(r, 0, sizeof *r);
    r->ep = route(path, r);
    if (r->ep == BT_EP_OTHER) {
        r->name = r->version = NULL;
        r->name_len = r->version_len = 0;
    }
}

int bt_endpoint_is_model(int ep)
{
    return ep == BT_EP_MODEL_META || ep == BT_EP_MODEL_READY || ep == BT_EP_INFER ||
           ep == BT_EP_V1_META || ep == BT_EP_V1_PREDICT || ep == BT_EP_MODEL_CONFIG;
}

void bt_response_init(bt_http_response *r)
{
    memset(r, 0, sizeof *r);
    r->status = 200;
    r->content_type = "application/json";
    r->header_length = -1;
}

void bt_http_response_compress(bt_http_response *r, const char *accept_encoding)
{
    if (!r->content_encoding && bt_accepts_gzip(accept_encoding) && bt_gzip_body(&r->body))
        r->content_encoding = "gzip";
}

void bt_response_error(bt_http_response *r, int status, const char *message)
{
    r->status = status;
    r->content_type = "application/json";
    r->header_length = -1;
    r->body.len = 0;
    bt_codec_encode_error(&r->body, message);
}

void bt_response_errorf(bt_http_response *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bt_response_error(r, status, msg);
}

int bt_status_for(bt_error_kind kind)
{
    switch (kind) {
    case BT_ERR_TYPE:
    case BT_ERR_VALUE:
    case BT_ERR_INFERENCE: /* the model rejected input berth could not check: the client's */
        return 400;
    case BT_ERR_TOO_LARGE:
        return 413;
    case BT_ERR_OVERLOADED:
    case BT_ERR_TIMEOUT:
        return 503;
    default:
        return 500;
    }
}

void bt_response_from_error(bt_http_response *r, const bt_error *err)
{
    bt_response_error(r, bt_status_for(err->kind), err->message);
    if (err->kind == BT_ERR_OVERLOADED || err->kind == BT_ERR_TIMEOUT)
        r->retry_after = 1;
}

void bt_response_unauthorized(bt_http_response *r, const char *authorization)
{
    bt_response_error(r, 401,
                      authorization ? "the bearer token is not valid"
                                    : "missing Authorization: Bearer <token> header");
    r->www_authenticate = 1;
}

int bt_token_ok(const char *token, size_t token_len, const char *auth)
{
    if (!token)
        return 1;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    auth += 7;
    while (*auth == ' ')
        auth++;
    size_t n = strlen(auth);
    while (n > 0 && (auth[n - 1] == ' ' || auth[n - 1] == '\t'))
        n--;
    unsigned char diff = (unsigned char)(n != token_len);
    for (size_t i = 0; i < token_len; i++)
        diff |= (unsigned char)(token[i] ^ (i < n ? auth[i] : 0));
    return diff == 0;
}

void bt_log_request(const char *line, int status, double seconds)
{
    char safe[2048];
    size_t k = 0;
    for (const unsigned char *p = (const unsigned char *)line; *p && k + 5 < sizeof safe; p++) {
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            k += (size_t)snprintf(safe + k, sizeof safe - k, "\\x%02x", *p);
        else
            safe[k++] = (char)*p;
    }
    safe[k] = '\0';
    fprintf(stderr, "berth: %s -> %d (%.2f ms)\n", safe, status, seconds * 1000.0);
}

void bt_traffic_init(bt_traffic *t)
{
    for (int e = 0; e < BT_N_EP; e++)
        bt_histogram_init(&t->latency[e], BT_SECONDS_BOUNDS, BT_SECONDS_N);
}

void bt_traffic_record(bt_traffic *t, int ep, int status, double seconds)
{
    if (status < 0 || status >= BT_N_CODES)
        status = 0;
    atomic_fetch_add_explicit(&t->counts[ep][status], 1, memory_order_relaxed);
    bt_histogram_observe(&t->latency[ep], seconds);
}

void bt_traffic_finish(bt_traffic *t, int log_requests, int ep, double start,
                       const bt_http_request *req, int status)
{
    double seconds = bt_now() - start;
    bt_traffic_record(t, ep, status, seconds);
    if (log_requests) {
        char line[600];
        snprintf(line, sizeof line, "%.16s %.500s", req->method, req->path);
        bt_log_request(line, status, seconds);
    }
}

void bt_traffic_render_counts(bt_traffic *t, const char *labels, bt_buf *out)
{
    for (int e = 0; e < BT_N_EP; e++)
        for (int c = 0; c < BT_N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&t->counts[e][c], memory_order_relaxed);
            if (v)
                bt_buf_printf(out, "berth_requests_total{%s%sendpoint=\"%s\",code=\"%d\"} %llu\n",
                              labels, labels[0] ? "," : "", BT_EP_NAMES[e], c,
                              (unsigned long long)v);
        }
}

void bt_traffic_render_latency(bt_traffic *t, const char *labels, int *first, bt_buf *out)
{
    for (int e = 0; e < BT_N_EP; e++) {
        uint64_t counts[BT_HIST_MAX_BOUNDS + 1], total = 0;
        bt_histogram_counts(&t->latency[e], counts);
        for (size_t i = 0; i <= t->latency[e].n_bounds; i++)
            total += counts[i];
        if (!total)
            continue;
        char all[512];
        snprintf(all, sizeof all, "%s%sendpoint=\"%s\"", labels, labels[0] ? "," : "",
                 BT_EP_NAMES[e]);
        bt_histogram_render(out, &t->latency[e], "berth_request_duration_seconds",
                            *first ? "Time from request to response, by endpoint." : NULL, all);
        *first = 0;
    }
}
