/*
 * server.c - the service (routes, auth, codec, batcher, metrics, readiness) and the
 * libmicrohttpd transport around it. No Python anywhere on this path.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#define _GNU_SOURCE /* POLLRDHUP */
#include "serving/server.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "serving/encoding.h"
#include "runtime/tensor.h"

#ifndef BERTH_SERVER_VERSION
#define BERTH_SERVER_VERSION "0.1.0"
#endif

/* ------------------------------------------------------------------ endpoints */

enum {
    EP_LIVE,
    EP_READY,
    EP_SERVER_META,
    EP_MODEL_META,
    EP_MODEL_READY,
    EP_INFER,
    EP_V1_META,
    EP_V1_PREDICT,
    EP_METRICS,
    EP_MODEL_CONFIG,
    EP_STATS,
    EP_OTHER,
    N_EP
};

static const char *const EP_NAMES[N_EP] = {
    "health_live", "health_ready", "server_metadata", "model_metadata", "model_ready",
    "infer",       "v1_metadata",  "v1_predict",      "metrics",        "model_config",
    "statistics",  "other"};

#define N_CODES 600

/* FAILED: warm-up failed, the model is not ready. STOPPING: shutdown past its grace
 * period; inference gets 503 at once. */
enum { STATE_STARTING = 0, STATE_READY = 1, STATE_DRAINING = 2, STATE_FAILED = 3, STATE_STOPPING = 4 };

struct bt_service {
    bt_model *model;
    char *name;
    char *token;
    size_t token_len;
    int log_requests;
    double timeout_ms;
    int64_t max_rows;
    size_t max_response_bytes;
    bt_batcher_params bp;
    bt_batcher *batcher;
    _Atomic int state;
    _Atomic int64_t pending;
    _Atomic uint64_t warmup_bits; /* seconds, as the bits of a double */
    char failure[1024]; /* why the model failed at start; written before STATE_FAILED */
    bt_batch_cost tuned[BT_TUNE_MAX_STEPS]; /* written by warm-up, before readiness */
    size_t n_tuned;
    _Atomic uint64_t counts[N_EP][N_CODES];
    bt_histogram latency[N_EP];
    /* Every submitted, unanswered job, for the deadline timer and for shutdown. */
    pthread_mutex_t watch_mu;
    pthread_cond_t watch_cv;
    bt_job *watch; /* doubly linked through bt_job.wprev/wnext */
    int timer_stop;
    int timer_started;
    double timer_next; /* the deadline the timer sleeps until; 0: none */
    pthread_t timer;
    _Atomic uint64_t expired; /* answered 503 by the timer (deadline or shutdown) */
};

struct bt_job {
    bt_service *svc;
    int endpoint;
    double start;
    char *log_line; /* "POST /v2/..." for the request log; NULL when not logging */
    char *id;
    bt_output_request *outs;
    size_t n_outs;
    int binary_all;
    DLManagedTensor *in[BT_BATCH_MAX_INPUTS];
    size_t n_in;
    bt_response_fn done;
    void *ctx;
    /* Answered once, by whichever comes first: the batcher's callback or the timer.
     * refs: one for the batcher's callback, one for the watch list. */
    double deadline; /* bt_now() seconds; 0: none */
    _Atomic int answered;
    _Atomic int refs;
    int watched;
    bt_job *wprev, *wnext;
};

/* ------------------------------------------------------------------ helpers */

static void response_init(bt_http_response *r)
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

static void set_error(bt_http_response *r, int status, const char *message)
{
    r->status = status;
    r->content_type = "application/json";
    r->header_length = -1;
    r->body.len = 0;
    bt_codec_encode_error(&r->body, message);
}

static void set_errorf(bt_http_response *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_errorf(bt_http_response *r, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_error(r, status, msg);
}

static int status_for(bt_error_kind kind)
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

static void set_from_error(bt_http_response *r, const bt_error *err)
{
    set_error(r, status_for(err->kind), err->message);
    if (err->kind == BT_ERR_OVERLOADED || err->kind == BT_ERR_TIMEOUT)
        r->retry_after = 1;
}

static void record(bt_service *svc, int ep, int status, double seconds)
{
    if (status < 0 || status >= N_CODES)
        status = 0;
    atomic_fetch_add_explicit(&svc->counts[ep][status], 1, memory_order_relaxed);
    bt_histogram_observe(&svc->latency[ep], seconds);
}

/* One line per request; control bytes (a %0A in a path, say) are written as \xNN so that
 * a client cannot forge log lines. */
static void log_request(const char *line, int status, double seconds)
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

/* Ends a request answered without a forward. */
static int finish_sync(bt_service *svc, int ep, double start, const bt_http_request *req,
                       const bt_http_response *resp)
{
    double t = bt_now() - start;
    record(svc, ep, resp->status, t);
    if (svc->log_requests) {
        char line[600];
        snprintf(line, sizeof line, "%.16s %.500s", req->method, req->path);
        log_request(line, resp->status, t);
    }
    atomic_fetch_sub(&svc->pending, 1);
    return 0;
}

/* finish_sync for an inference request of this model that failed before forward. */
static int finish_failed(bt_service *svc, int ep, double start, const bt_http_request *req,
                         const bt_http_response *resp)
{
    bt_stats_request(bt_batcher_infer_stats(svc->batcher), 0, bt_now() - start);
    return finish_sync(svc, ep, start, req, resp);
}

/* finish_failed for a request announced to the batcher that will not be submitted. */
static int finish_withdrawn(bt_service *svc, int ep, double start, const bt_http_request *req,
                            const bt_http_response *resp)
{
    bt_batcher_withdraw(svc->batcher);
    return finish_failed(svc, ep, start, req, resp);
}

static const char *output_name(const bt_model *m, size_t k, char *scratch, size_t size)
{
    const char *name = bt_model_output_name(m, k);
    if (name)
        return name;
    snprintf(scratch, size, "output_%zu", k);
    return scratch;
}

static int token_ok(const bt_service *svc, const char *auth)
{
    if (!svc->token)
        return 1;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    auth += 7;
    while (*auth == ' ')
        auth++;
    size_t n = strlen(auth);
    while (n > 0 && (auth[n - 1] == ' ' || auth[n - 1] == '\t'))
        n--;
    unsigned char diff = (unsigned char)(n != svc->token_len);
    for (size_t i = 0; i < svc->token_len; i++)
        diff |= (unsigned char)(svc->token[i] ^ (i < n ? auth[i] : 0));
    return diff == 0;
}

/* ------------------------------------------------------------------ service */

static void *timer_main(void *arg);

int bt_service_create(bt_model *model, const bt_service_params *params, bt_service **out,
                      bt_error *err)
{
    *out = NULL;
    if (!params->name || !params->name[0] || strlen(params->name) > 200 ||
        strpbrk(params->name, "/:?#% \t\r\n\"\\"))
        return bt_error_set(err, BT_ERR_VALUE,
                            "model name must be 1-200 characters without / : ? # %% spaces or "
                            "quotes, got '%.200s'",
                            params->name ? params->name : "");
    bt_service *svc = calloc(1, sizeof *svc);
    if (!svc)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    svc->model = model;
    svc->name = strdup(params->name);
    if (params->auth_token && params->auth_token[0]) {
        svc->token = strdup(params->auth_token);
        svc->token_len = svc->token ? strlen(svc->token) : 0;
    }
    if (!svc->name || (params->auth_token && params->auth_token[0] && !svc->token)) {
        bt_service_free(svc);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    svc->log_requests = params->log_requests;
    svc->timeout_ms = params->timeout_ms > 0 ? params->timeout_ms : 0;
    svc->max_rows = params->max_rows > 0 ? params->max_rows : BT_DEFAULT_MAX_ROWS;
    svc->max_response_bytes =
        params->max_response_bytes ? params->max_response_bytes : BT_DEFAULT_MAX_RESPONSE_BYTES;
    svc->bp = params->batch;
    /* a .pt2 admits batches only up to the range its batch dimension was exported for */
    if (model->max_batch < svc->bp.max_batch_size) svc->bp.max_batch_size = (int)model->max_batch;
    for (int e = 0; e < N_EP; e++)
        bt_histogram_init(&svc->latency[e], BT_SECONDS_BOUNDS, BT_SECONDS_N);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&svc->watch_mu, NULL);
    pthread_cond_init(&svc->watch_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (bt_batcher_create(model, &svc->bp, &svc->batcher, err) != 0) {
        bt_service_free(svc);
        return -1;
    }
    int e = pthread_create(&svc->timer, NULL, timer_main, svc);
    if (e != 0) {
        bt_service_free(svc);
        return bt_error_set(err, BT_ERR_INTERNAL, "cannot start the deadline timer: %s",
                            strerror(e));
    }
    svc->timer_started = 1;
    *out = svc;
    return 0;
}

void bt_service_free(bt_service *svc)
{
    if (!svc)
        return;
    bt_batcher_free(svc->batcher); /* runs every queued job's callback */
    if (svc->timer_started) {
        pthread_mutex_lock(&svc->watch_mu);
        svc->timer_stop = 1;
        pthread_cond_signal(&svc->watch_cv);
        pthread_mutex_unlock(&svc->watch_mu);
        pthread_join(svc->timer, NULL);
    }
    pthread_cond_destroy(&svc->watch_cv);
    pthread_mutex_destroy(&svc->watch_mu);
    free(svc->name);
    free(svc->token);
    free(svc);
}

void bt_service_set_ready(bt_service *svc, int ready)
{
    if (ready) {
        int expect = atomic_load(&svc->state);
        while (expect != STATE_FAILED &&
               !atomic_compare_exchange_weak(&svc->state, &expect, STATE_READY))
            ;
    } else {
        int expect = STATE_READY;
        atomic_compare_exchange_strong(&svc->state, &expect, STATE_DRAINING);
    }
}

int bt_service_ready(const bt_service *svc) { return atomic_load(&svc->state) == STATE_READY; }

void bt_service_set_failed(bt_service *svc, const char *message)
{
    snprintf(svc->failure, sizeof svc->failure, "%s", message);
    atomic_store(&svc->state, STATE_FAILED); /* after the message: readers load state first */
}

int bt_service_batching(const bt_service *svc) { return bt_batcher_is_batching(svc->batcher); }
bt_batcher *bt_service_batcher(bt_service *svc) { return svc->batcher; }
int64_t bt_service_pending(const bt_service *svc) { return atomic_load(&svc->pending); }

void bt_service_record(bt_service *svc, const char *path, int status, double seconds)
{
    int ep = strncmp(path, "/v2/models/", 11) == 0 ? EP_INFER
             : strncmp(path, "/v1/models/", 11) == 0 ? EP_V1_PREDICT
                                                    : EP_OTHER;
    record(svc, ep, status, seconds);
}

/* One forward of `rows` zero rows in the signature's shape (free dimensions after the
 * first are 1), through the batcher; *seconds gets its wall time. */
static int warm_forward(bt_service *svc, size_t n, int rows, double *seconds, bt_error *err)
{
    const bt_model *m = svc->model;
    DLManagedTensor *in[BT_BATCH_MAX_INPUTS] = {0};
    for (size_t i = 0; i < n; i++) {
        const bt_spec *sp = &m->inputs[i];
        int64_t shape[64];
        int nd = sp->ndim < 64 ? sp->ndim : 64;
        for (int d = 0; d < nd; d++)
            shape[d] = sp->shape[d] >= 0 ? sp->shape[d] : (d == 0 ? rows : 1);
        in[i] = bt_tensor_new(sp->dtype, nd, shape, err);
        if (!in[i]) {
            for (size_t k = 0; k < i; k++)
                in[k]->deleter(in[k]);
            return -1;
        }
        memset(in[i]->dl_tensor.data, 0,
               (size_t)bt_numel(&in[i]->dl_tensor) * bt_dtype_size(sp->dtype));
    }
    DLManagedTensor *outs[BT_MAX_OUTPUTS];
    size_t n_out = 0;
    int is_tuple;
    double start = bt_now();
    if (bt_batcher_run(svc->batcher, in, n, 0, outs, BT_MAX_OUTPUTS, &n_out, &is_tuple, err) !=
        0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return bt_error_set(err, err->kind, "warm-up with batches of %d zero rows failed: %s",
                            rows, msg);
    }
    *seconds = bt_now() - start;
    for (size_t k = 0; k < n_out; k++)
        outs[k]->deleter(outs[k]);
    return 0;
}

/* Times batches of 1, 2, 4, ... max_batch_size rows (one untimed forward for the new
 * shape, then the best of BT_TUNE_TIMED) and sets the batcher's limit to the smallest
 * size whose cost per row is within BT_TUNE_SLACK of the cheapest. Bigger is not always
 * cheaper: a compute-bound model on few cores costs the same per row at any size, and
 * activations that outgrow glibc's per-thread heaps are mapped and faulted in on every
 * forward. The climb stops once rows cost BT_TUNE_STOP times the cheapest (timings on a
 * shared machine wander by a third), after BT_TUNE_FLAT_STEPS sizes in a row that did not
 * beat the cheapest by BT_TUNE_SLACK (bigger batches would only add latency), or before a
 * size whose forwards would take the warm-up past BT_TUNE_BUDGET_S seconds. */
#define BT_TUNE_TIMED 3
#define BT_TUNE_SLACK 1.15
#define BT_TUNE_STOP 2.0
#define BT_TUNE_FLAT_STEPS 2
#define BT_TUNE_BUDGET_S 20.0

static int tune_batch_limit(bt_service *svc, size_t n, bt_error *err)
{
    const int max = svc->bp.max_batch_size;
    const double start = bt_now();
    double best = HUGE_VAL;
    int flat = 0;
    svc->n_tuned = 0;
    for (int rows = 1; svc->n_tuned < BT_TUNE_MAX_STEPS;) {
        double t, cost = HUGE_VAL;
        if (warm_forward(svc, n, rows, &t, err) != 0)
            return -1;
        for (int r = 0; r < BT_TUNE_TIMED; r++) {
            if (warm_forward(svc, n, rows, &t, err) != 0)
                return -1;
            if (t < cost)
                cost = t;
        }
        const double forward = cost;
        cost /= rows;
        svc->tuned[svc->n_tuned].rows = rows;
        svc->tuned[svc->n_tuned].seconds_per_row = cost;
        svc->n_tuned++;
        flat = svc->n_tuned > 1 && cost * BT_TUNE_SLACK > best ? flat + 1 : 0;
        if (cost < best)
            best = cost;
        if (rows == max || cost > BT_TUNE_STOP * best || flat >= BT_TUNE_FLAT_STEPS)
            break;
        const int next = rows > max / 2 ? max : rows * 2;
        const double ahead = forward * next / rows * (1 + BT_TUNE_TIMED);
        if (bt_now() - start + ahead > BT_TUNE_BUDGET_S)
            break;
        rows = next;
    }
    int limit = svc->tuned[svc->n_tuned - 1].rows;
    for (size_t i = 0; i < svc->n_tuned; i++) {
        if (svc->tuned[i].seconds_per_row <= BT_TUNE_SLACK * best) {
            limit = svc->tuned[i].rows;
            break;
        }
    }
    bt_batcher_set_batch_limit(svc->batcher, limit);
    return 0;
}

int bt_service_warmup(bt_service *svc, int rounds, int tune, double *seconds, bt_error *err)
{
    const bt_model *m = svc->model;
    double start = bt_now();
    *seconds = 0;
    size_t n = m->n_required ? m->n_required : m->n_inputs;
    if (n == 0 || n > BT_BATCH_MAX_INPUTS)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!m->inputs[i].has_dtype || m->inputs[i].ndim < 0)
            return 0;
    double t;
    int rc = 0;
    for (int r = 0; r < rounds && rc == 0; r++)
        rc = warm_forward(svc, n, 1, &t, err);
    int max = bt_service_batching(svc) ? svc->bp.max_batch_size : 1;
    if (rc == 0 && max > 1)
        rc = tune ? tune_batch_limit(svc, n, err) : warm_forward(svc, n, max, &t, err);
    if (rc != 0) {
        char msg[sizeof svc->failure];
        snprintf(msg, sizeof msg, "not ready: %.1000s", err->message);
        bt_service_set_failed(svc, msg);
        return -1;
    }
    bt_stats_reset(bt_batcher_infer_stats(svc->batcher));
    *seconds = bt_now() - start;
    uint64_t bits;
    memcpy(&bits, seconds, sizeof bits);
    atomic_store(&svc->warmup_bits, bits);
    return 1;
}

size_t bt_service_tuning(const bt_service *svc, const bt_batch_cost **costs)
{
    *costs = svc->tuned;
    return svc->n_tuned;
}

/* Splits the path into an endpoint, a model name and a version (pointers into path and
 * lengths; version NULL when the path names none). */
static int route(const char *path, const char **name, size_t *name_len, const char **version,
                 size_t *version_len)
{
    *name = NULL;
    *name_len = 0;
    *version = NULL;
    *version_len = 0;
    if (strcmp(path, "/v2/models/stats") == 0)
        return EP_STATS; /* every model's; a model named "stats" keeps its other paths */
    if (strcmp(path, "/v2/health/live") == 0 || strcmp(path, "/") == 0) /* "/": KServe v1's */
        return EP_LIVE;
    if (strcmp(path, "/v2/health/ready") == 0)
        return EP_READY;
    if (strcmp(path, "/v2") == 0 || strcmp(path, "/v2/") == 0)
        return EP_SERVER_META;
    if (strcmp(path, "/metrics") == 0)
        return EP_METRICS;
    if (strncmp(path, "/v2/models/", 11) == 0) {
        const char *p = path + 11;
        const char *slash = strchr(p, '/');
        *name = p;
        *name_len = slash ? (size_t)(slash - p) : strlen(p);
        if (*name_len == 0)
            return EP_OTHER;
        const char *rest = slash ? slash : "";
        if (strncmp(rest, "/versions/", 10) == 0) {
            const char *v = rest + 10;
            const char *vs = strchr(v, '/');
            if (vs == v || !v[0])
                return EP_OTHER;
            *version = v;
            *version_len = vs ? (size_t)(vs - v) : strlen(v);
            rest = vs ? vs : "";
        }
        if (rest[0] == '\0')
            return EP_MODEL_META;
        if (strcmp(rest, "/ready") == 0)
            return EP_MODEL_READY;
        if (strcmp(rest, "/infer") == 0)
            return EP_INFER;
        if (strcmp(rest, "/config") == 0)
            return EP_MODEL_CONFIG;
        if (strcmp(rest, "/stats") == 0)
            return EP_STATS;
        return EP_OTHER;
    }
    if (strncmp(path, "/v1/models/", 11) == 0) {
        const char *p = path + 11;
        if (strchr(p, '/'))
            return EP_OTHER;
        size_t n = strlen(p);
        *name = p;
        if (n > 8 && strcmp(p + n - 8, ":predict") == 0) {
            *name_len = n - 8;
            return EP_V1_PREDICT;
        }
        *name_len = n;
        return n ? EP_V1_META : EP_OTHER;
    }
    return EP_OTHER;
}

static void spec_json(bt_buf *b, const bt_spec *s, const char *name)
{
    bt_buf_puts(b, "{\"name\":");
    bt_buf_json_string(b, name);
    if (s && s->has_dtype && bt_codec_datatype_name(s->dtype))
        bt_buf_printf(b, ",\"datatype\":\"%s\"", bt_codec_datatype_name(s->dtype));
    if (s && s->ndim >= 0) {
        bt_buf_puts(b, ",\"shape\":[");
        for (int d = 0; d < s->ndim; d++)
            bt_buf_printf(b, d ? ",%lld" : "%lld", (long long)s->shape[d]);
        bt_buf_puts(b, "]");
    }
    bt_buf_puts(b, "}");
}

static void model_metadata(bt_service *svc, bt_buf *b)
{
    const bt_model *m = svc->model;
    char scratch[32];
    bt_buf_puts(b, "{\"name\":");
    bt_buf_json_string(b, svc->name);
    bt_buf_puts(b, ",\"versions\":[\"" BT_MODEL_VERSION "\"],\"platform\":");
    bt_buf_puts(b, strcmp(svc->model->format, "pt2") == 0 ? "\"torch_aoti\"" : "\"pytorch_torchscript\"");
    bt_buf_puts(b, ",\"inputs\":[");
    for (size_t i = 0; i < m->n_inputs; i++) {
        if (i)
            bt_buf_puts(b, ",");
        spec_json(b, &m->inputs[i], m->inputs[i].name);
    }
    bt_buf_puts(b, "],\"outputs\":[");
    for (size_t k = 0; k < m->n_outputs; k++) {
        if (k)
            bt_buf_puts(b, ",");
        spec_json(b, &m->outputs[k], output_name(m, k, scratch, sizeof scratch));
    }
    bt_buf_printf(b, "],\"parameters\":{\"batching\":%s,\"max_batch_size\":%d}}",
                  bt_service_batching(svc) ? "true" : "false",
                  bt_service_batching(svc) ? svc->bp.max_batch_size : 1);
}

/* GET /v2/models/{name}/config: Triton's model configuration JSON. With batching, dims
 * leave out the batch dimension and max_batch_size is the limit; without, dims are the
 * whole shape and max_batch_size is 0. Parts the signature does not know are left out
 * (data_type TYPE_INVALID when the dtype is unknown). */
static void config_tensor(bt_buf *b, const bt_spec *s, const char *name, int batching)
{
    const char *dt = s && s->has_dtype ? bt_codec_datatype_name(s->dtype) : NULL;
    bt_buf_puts(b, "{\"name\":");
    bt_buf_json_string(b, name);
    bt_buf_printf(b, ",\"data_type\":\"TYPE_%s\"", dt ? dt : "INVALID");
    if (s && s->ndim >= 0) {
        bt_buf_puts(b, ",\"dims\":[");
        for (int d = batching ? 1 : 0, first = 1; d < s->ndim; d++, first = 0)
            bt_buf_printf(b, first ? "%lld" : ",%lld", (long long)s->shape[d]);
        bt_buf_puts(b, "]");
    }
    bt_buf_puts(b, "}");
}

static void model_config(bt_service *svc, bt_buf *b)
{
    const bt_model *m = svc->model;
    int batching = bt_service_batching(svc);
    char scratch[32];
    bt_buf_puts(b, "{\"name\":");
    bt_buf_json_string(b, svc->name);
    bt_buf_printf(b, ",\"platform\":\"pytorch_libtorch\",\"backend\":\"pytorch\","
                     "\"max_batch_size\":%d,\"input\":[",
                  batching ? svc->bp.max_batch_size : 0);
    for (size_t i = 0; i < m->n_inputs; i++) {
        if (i)
            bt_buf_puts(b, ",");
        config_tensor(b, &m->inputs[i], m->inputs[i].name, batching);
    }
    bt_buf_puts(b, "],\"output\":[");
    for (size_t k = 0; k < m->n_outputs; k++) {
        if (k)
            bt_buf_puts(b, ",");
        config_tensor(b, &m->outputs[k], output_name(m, k, scratch, sizeof scratch), batching);
    }
    bt_buf_puts(b, "]");
    if (batching)
        bt_buf_printf(b, ",\"dynamic_batching\":{\"max_queue_delay_microseconds\":%.0f}",
                      svc->bp.max_delay_ms * 1000.0);
    bt_buf_puts(b, ",\"version_policy\":{\"specific\":{\"versions\":[" BT_MODEL_VERSION "]}}}");
}

static const char *ready_reason(const bt_service *svc)
{
    switch (atomic_load(&svc->state)) {
    case STATE_DRAINING:
        return "not ready: the server is shutting down";
    case STATE_FAILED:
        return svc->failure;
    default:
        return "not ready: the model is warming up";
    }
}

static void job_free(bt_job *job)
{
    if (!job)
        return;
    for (size_t i = 0; i < job->n_in; i++)
        if (job->in[i] && job->in[i]->deleter)
            job->in[i]->deleter(job->in[i]);
    for (size_t i = 0; i < job->n_outs; i++)
        free(job->outs[i].name);
    free(job->outs);
    free(job->id);
    free(job->log_line);
    free(job);
}

/* Moves the parsed request's tensors into model order; -1 with resp set on mismatch. */
static int bind_inputs(bt_service *svc, bt_infer_request *req, bt_job *job,
                       bt_http_response *resp)
{
    const bt_model *m = svc->model;
    if (req->n_inputs > m->n_inputs || m->n_inputs > BT_BATCH_MAX_INPUTS) {
        set_errorf(resp, 400, "the model takes %zu inputs, the request has %zu", m->n_inputs,
                   req->n_inputs);
        return -1;
    }
    char names[512] = "";
    for (size_t i = 0; i < m->n_inputs; i++) {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s'%.64s'", i ? ", " : "", m->inputs[i].name);
    }
    for (size_t r = 0; r < req->n_inputs; r++) {
        size_t i = 0;
        while (i < m->n_inputs && strcmp(m->inputs[i].name, req->inputs[r].name) != 0)
            i++;
        if (i == m->n_inputs) {
            set_errorf(resp, 400, "unknown input '%.64s': the model's inputs are %s",
                       req->inputs[r].name, names);
            return -1;
        }
        job->in[i] = req->inputs[r].tensor;
        req->inputs[r].tensor = NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->n_inputs; i++)
        if (job->in[i])
            n = i + 1;
    for (size_t i = 0; i < m->n_inputs; i++) {
        if (!job->in[i] && (i < m->n_required || i < n)) {
            set_errorf(resp, 400, "missing input '%.64s': the model's inputs are %s",
                       m->inputs[i].name, names);
            job->n_in = m->n_inputs;
            return -1;
        }
    }
    job->n_in = n;
    return 0;
}

static int check_content_type(const bt_http_request *req, int binary, bt_http_response *resp)
{
    const char *ct = req->content_type;
    if (!ct || !ct[0])
        return 0;
    size_t n = strcspn(ct, ";");
    while (n > 0 && ct[n - 1] == ' ')
        n--;
    if ((n == 16 && strncasecmp(ct, "application/json", 16) == 0) ||
        (binary && n == 24 && strncasecmp(ct, "application/octet-stream", 24) == 0))
        return 0;
    set_errorf(resp, 415,
               "unsupported Content-Type '%.100s': expected application/json%s", ct,
               binary ? " or application/octet-stream" : "");
    return -1;
}

/* Bytes a JSON number may take in a response (with its comma): "-1.23456789e-38," is 16,
 * a float64 with 17 digits 25. Response sizes are estimated with it before encoding. */
#define BT_JSON_NUMBER_BYTES 26

/* The response's size for `elements` numbers of dtype, as JSON or binary. */
static double response_bytes(double elements, DLDataType dtype, int binary)
{
    size_t es = bt_dtype_size(dtype);
    return elements * (double)(binary ? (es ? es : 8) : BT_JSON_NUMBER_BYTES);
}

/* Rows per request (--max-rows-per-request) and, where the signature gives every output
 * extent but the batch, the response size (--max-response-mb): both before any forward,
 * so that a shape like [5000000, 0] (82 bytes of JSON) cannot ask for gigabytes. */
static int check_bounds(bt_service *svc, const bt_job *job, bt_http_response *resp)
{
    const bt_model *m = svc->model;
    int64_t rows = 1;
    for (size_t i = 0; i < job->n_in; i++) {
        const DLTensor *t = job->in[i] ? &job->in[i]->dl_tensor : NULL;
        if (!t || t->ndim < 1)
            continue;
        if (t->shape[0] > svc->max_rows) {
            set_errorf(resp, 413,
                       "input '%.64s' has %lld rows; this server takes at most %lld rows per "
                       "request (--max-rows-per-request)",
                       m->inputs[i].name, (long long)t->shape[0], (long long)svc->max_rows);
            return -1;
        }
        if (t->shape[0] > rows)
            rows = t->shape[0];
    }
    double total = 0;
    for (size_t k = 0; k < m->n_outputs; k++) {
        const bt_spec *o = &m->outputs[k];
        if (o->ndim < 0 || !o->has_dtype)
            return 0; /* unknown: checked after forward, before encoding */
        double elements = 1;
        for (int d = 0; d < o->ndim; d++) {
            int64_t e = o->shape[d] >= 0 ? o->shape[d] : (d == 0 ? rows : -1);
            if (e < 0)
                return 0;
            elements *= (double)e;
        }
        total += response_bytes(elements, o->dtype, job->binary_all);
    }
    if (total > (double)svc->max_response_bytes) {
        set_errorf(resp, 413,
                   "the response would take about %.0f bytes, over this server's limit of %zu "
                   "(--max-response-mb): send fewer rows",
                   total, svc->max_response_bytes);
        return -1;
    }
    return 0;
}

int bt_service_begin(bt_service *svc, const bt_http_request *req, bt_http_response *resp,
                     bt_job **job_out)
{
    *job_out = NULL;
    response_init(resp);
    double start = req->received > 0 ? req->received : bt_now();
    atomic_fetch_add(&svc->pending, 1);
    const char *name, *version;
    size_t name_len, version_len;
    int ep = route(req->path, &name, &name_len, &version, &version_len);
    int is_get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int is_post = strcmp(req->method, "POST") == 0;

    for (const unsigned char *p = (const unsigned char *)req->path; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            set_errorf(resp, 400, "the path contains the control byte 0x%02x", *p);
            return finish_sync(svc, EP_OTHER, start, req, resp);
        }
    }
    /* Auth before anything that could name the model (a 404 would reveal it). */
    int open_ep = ep == EP_LIVE || ep == EP_READY || ep == EP_MODEL_READY;
    int authorized = token_ok(svc, req->authorization);
    if (!open_ep && !authorized) {
        set_error(resp, 401,
                  req->authorization ? "the bearer token is not valid"
                                     : "missing Authorization: Bearer <token> header");
        resp->www_authenticate = 1;
        return finish_sync(svc, ep, start, req, resp);
    }
    if (ep == EP_OTHER) {
        set_errorf(resp, 404,
                   "no such endpoint: %.16s %.200s (see /v2, /v2/models/%s, "
                   "/v2/models/%s/infer, /v2/models/%s/config, /v2/models/%s/stats, "
                   "/v1/models/%s:predict)",
                   req->method, req->path, svc->name, svc->name, svc->name, svc->name,
                   svc->name);
        return finish_sync(svc, ep, start, req, resp);
    }
    int wants_post = ep == EP_INFER || ep == EP_V1_PREDICT;
    if (wants_post ? !is_post : !is_get) {
        set_errorf(resp, 405, "method %.16s is not allowed on %.200s: use %s", req->method,
                   req->path, wants_post ? "POST" : "GET");
        resp->allow = wants_post ? "POST" : "GET, HEAD";
        return finish_sync(svc, ep, start, req, resp);
    }
    if (name && (name_len != strlen(svc->name) || memcmp(name, svc->name, name_len) != 0)) {
        if (authorized)
            set_errorf(resp, 404, "model '%.*s' not found: this server serves '%s'",
                       (int)(name_len > 200 ? 200 : name_len), name, svc->name);
        else
            set_errorf(resp, 404, "model '%.*s' not found",
                       (int)(name_len > 200 ? 200 : name_len), name);
        return finish_sync(svc, ep, start, req, resp);
    }
    if (version && (version_len != strlen(BT_MODEL_VERSION) ||
                    memcmp(version, BT_MODEL_VERSION, version_len) != 0)) {
        set_errorf(resp, 404,
                   "model '%s' has no version '%.*s': its only version is " BT_MODEL_VERSION,
                   svc->name, (int)(version_len > 64 ? 64 : version_len), version);
        return finish_sync(svc, ep, start, req, resp);
    }

    switch (ep) {
    case EP_LIVE:
        bt_buf_puts(&resp->body, strcmp(req->path, "/") == 0 ? "{\"status\":\"alive\"}" : "{\"live\":true}");
        return finish_sync(svc, ep, start, req, resp);
    case EP_READY:
    case EP_MODEL_READY:
        if (bt_service_ready(svc)) {
            bt_buf_puts(&resp->body, "{\"ready\":true}");
        } else {
            resp->status = 503; /* the probes' answer; the body says why */
            bt_buf_puts(&resp->body, "{\"ready\":false,\"error\":");
            bt_buf_json_string(&resp->body, ready_reason(svc));
            bt_buf_puts(&resp->body, "}");
        }
        return finish_sync(svc, ep, start, req, resp);
    case EP_MODEL_CONFIG:
        model_config(svc, &resp->body);
        return finish_sync(svc, ep, start, req, resp);
    case EP_STATS: /* this server's one model, asked for by name or not */
        bt_buf_puts(&resp->body, "{\"model_stats\":[");
        bt_stats_json(&resp->body, bt_batcher_infer_stats(svc->batcher), svc->name,
                      BT_MODEL_VERSION);
        bt_buf_puts(&resp->body, "]}");
        return finish_sync(svc, ep, start, req, resp);
    case EP_SERVER_META:
        bt_buf_puts(&resp->body, "{\"name\":\"berth\",\"version\":\"" BERTH_SERVER_VERSION
                                 "\",\"extensions\":[\"binary_tensor_data\","
                                 "\"model_configuration\",\"statistics\"]}");
        return finish_sync(svc, ep, start, req, resp);
    case EP_MODEL_META:
        model_metadata(svc, &resp->body);
        return finish_sync(svc, ep, start, req, resp);
    case EP_V1_META:
        bt_buf_puts(&resp->body, "{\"name\":");
        bt_buf_json_string(&resp->body, svc->name);
        bt_buf_printf(&resp->body, ",\"ready\":%s}", bt_service_ready(svc) ? "true" : "false");
        return finish_sync(svc, ep, start, req, resp);
    case EP_METRICS:
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        bt_service_metrics(svc, &resp->body);
        return finish_sync(svc, ep, start, req, resp);
    default:
        break;
    }

    /* EP_INFER or EP_V1_PREDICT */
    if (atomic_load(&svc->state) == STATE_STOPPING) {
        set_error(resp, 503, "the server is shutting down");
        resp->retry_after = 1;
        return finish_sync(svc, ep, start, req, resp);
    }
    if (svc->timeout_ms > 0 && bt_now() > start + svc->timeout_ms / 1000.0) {
        /* It waited for the parse thread past its deadline: no parse, no forward. */
        set_errorf(resp, 503, "the request did not finish within its deadline of %g ms "
                              "(--timeout-ms)",
                   svc->timeout_ms);
        resp->retry_after = 1;
        atomic_fetch_add(&svc->expired, 1);
        return finish_sync(svc, ep, start, req, resp);
    }
    long long header_len = -1;
    if (ep == EP_INFER && req->header_length) {
        char *end;
        errno = 0;
        header_len = strtoll(req->header_length, &end, 10);
        if (errno || end == req->header_length || *end || header_len < 0) {
            set_errorf(resp, 400,
                       "Inference-Header-Content-Length must be a non-negative integer, got "
                       "'%.40s'",
                       req->header_length);
            return finish_failed(svc, ep, start, req, resp);
        }
    }
    if (check_content_type(req, header_len >= 0, resp) != 0)
        return finish_failed(svc, ep, start, req, resp);

    bt_error err = {BT_OK, ""};
    bt_coding coding;
    if (bt_coding_parse(req->content_encoding, &coding, &err) != 0) {
        set_error(resp, 415, err.message);
        return finish_failed(svc, ep, start, req, resp);
    }
    bt_buf inflated = {0}; /* the body when it came compressed; freed after parsing */
    const char *body = req->body ? req->body : "";
    size_t body_len = req->body_len;
    if (coding != BT_CODING_IDENTITY) {
        if (bt_inflate(coding, body, body_len, req->max_body ? req->max_body : BT_DEFAULT_MAX_BODY,
                       &inflated, &err) != 0) {
            set_from_error(resp, &err);
            return finish_failed(svc, ep, start, req, resp);
        }
        body = inflated.data ? inflated.data : "";
        body_len = inflated.len;
    }
    bt_infer_request *parsed = NULL;
    int rc;
    bt_batcher_announce(svc->batcher); /* withdrawn by finish_withdrawn on every failure */
    if (ep == EP_INFER) {
        rc = bt_codec_parse_v2(body, body_len, header_len, &parsed, &err);
    } else {
        const bt_model *m = svc->model;
        size_t nh = m->n_required ? m->n_required : m->n_inputs;
        bt_v1_hint hints[BT_BATCH_MAX_INPUTS];
        if (nh > BT_BATCH_MAX_INPUTS)
            nh = BT_BATCH_MAX_INPUTS;
        for (size_t i = 0; i < nh; i++) {
            hints[i].name = m->inputs[i].name;
            hints[i].has_dtype = m->inputs[i].has_dtype;
            hints[i].dtype = m->inputs[i].dtype;
        }
        rc = bt_codec_parse_v1(body, body_len, hints, nh, &parsed, &err);
    }
    bt_buf_free(&inflated);
    if (rc != 0) {
        set_from_error(resp, &err);
        return finish_withdrawn(svc, ep, start, req, resp);
    }
    bt_job *job = calloc(1, sizeof *job);
    if (!job) {
        bt_infer_request_free(parsed);
        set_error(resp, 500, "out of memory");
        return finish_withdrawn(svc, ep, start, req, resp);
    }
    job->svc = svc;
    job->endpoint = ep;
    job->start = start;
    job->binary_all = parsed->binary_data_output;
    if (bind_inputs(svc, parsed, job, resp) != 0 || check_bounds(svc, job, resp) != 0) {
        bt_infer_request_free(parsed);
        job_free(job);
        return finish_withdrawn(svc, ep, start, req, resp);
    }
    /* Requested outputs: check names now when the signature lists them. */
    const bt_model *m = svc->model;
    for (size_t o = 0; m->n_outputs > 0 && o < parsed->n_outputs; o++) {
        size_t k = 0;
        char scratch[32];
        while (k < m->n_outputs &&
               strcmp(output_name(m, k, scratch, sizeof scratch), parsed->outputs[o].name) != 0)
            k++;
        if (k == m->n_outputs) {
            set_errorf(resp, 400, "unknown output '%.64s': the model's outputs are listed at "
                                  "GET /v2/models/%s",
                       parsed->outputs[o].name, svc->name);
            bt_infer_request_free(parsed);
            job_free(job);
            return finish_withdrawn(svc, ep, start, req, resp);
        }
    }
    for (size_t o = 0; o < parsed->n_outputs; o++) {
        for (size_t q = 0; q < o; q++) {
            if (strcmp(parsed->outputs[q].name, parsed->outputs[o].name) == 0) {
                set_errorf(resp, 400, "output '%.64s' is requested twice: name each output once",
                           parsed->outputs[o].name);
                bt_infer_request_free(parsed);
                job_free(job);
                return finish_withdrawn(svc, ep, start, req, resp);
            }
        }
    }
    job->id = parsed->id;
    parsed->id = NULL;
    job->outs = parsed->outputs;
    job->n_outs = parsed->n_outputs;
    parsed->outputs = NULL;
    parsed->n_outputs = 0;
    bt_infer_request_free(parsed);
    if (svc->log_requests) {
        size_t l = strlen(req->path) + 24;
        job->log_line = malloc(l);
        if (job->log_line)
            snprintf(job->log_line, l, "%.16s %s", req->method, req->path);
    }
    *job_out = job;
    return 1;
}

/* Encodes the forward's outputs for the job's protocol. */
static void encode_outputs(bt_job *job, DLManagedTensor **outputs, size_t n_out,
                           bt_http_response *resp)
{
    bt_service *svc = job->svc;
    const bt_model *m = svc->model;
    bt_output outs[BT_MAX_OUTPUTS] = {0}; /* zeroed: gcc -O2 cannot see n bounds the reads */
    char scratch[BT_MAX_OUTPUTS][32];
    size_t n = 0;
    bt_error err = {BT_OK, ""};
    if (job->n_outs > 0) {
        for (size_t o = 0; o < job->n_outs && o < BT_MAX_OUTPUTS; o++) {
            size_t k = 0;
            while (k < n_out &&
                   strcmp(output_name(m, k, scratch[k], sizeof scratch[k]), job->outs[o].name) != 0)
                k++;
            if (k == n_out) {
                set_errorf(resp, 400, "unknown output '%.64s': the model returned %zu outputs "
                                      "(output_0 ... output_%zu)",
                           job->outs[o].name, n_out, n_out ? n_out - 1 : 0);
                return;
            }
            outs[n].name = output_name(m, k, scratch[k], sizeof scratch[k]);
            outs[n].tensor = &outputs[k]->dl_tensor;
            outs[n].binary = job->outs[o].binary >= 0 ? job->outs[o].binary : job->binary_all;
            n++;
        }
    } else {
        for (size_t k = 0; k < n_out; k++) {
            outs[n].name = output_name(m, k, scratch[k], sizeof scratch[k]);
            outs[n].tensor = &outputs[k]->dl_tensor;
            outs[n].binary = job->binary_all;
            n++;
        }
    }
    double bytes = 0;
    for (size_t i = 0; i < n; i++)
        bytes += response_bytes((double)bt_numel(outs[i].tensor), outs[i].tensor->dtype,
                                outs[i].binary);
    if (bytes > (double)svc->max_response_bytes) {
        set_errorf(resp, 413,
                   "the response would take about %.0f bytes, over this server's limit of %zu "
                   "(--max-response-mb): send fewer rows",
                   bytes, svc->max_response_bytes);
        return;
    }
    int rc;
    if (job->endpoint == EP_INFER) {
        size_t json_len = 0;
        int any_binary = 0;
        for (size_t i = 0; i < n; i++)
            any_binary |= outs[i].binary;
        rc = bt_codec_encode_v2(&resp->body, svc->name, job->id, outs, n, &json_len, &err);
        if (rc == 0 && any_binary) {
            resp->content_type = "application/octet-stream";
            resp->header_length = (long long)json_len;
        }
    } else {
        rc = bt_codec_encode_v1(&resp->body, outs, n, &err);
    }
    if (rc != 0)
        set_from_error(resp, &err);
}

static void job_unref(bt_job *job)
{
    if (atomic_fetch_sub(&job->refs, 1) == 1)
        job_free(job);
}

/* Takes job off the watch list if it is still on it, dropping the list's reference. */
static void unwatch(bt_job *job)
{
    bt_service *svc = job->svc;
    int dropped = 0;
    pthread_mutex_lock(&svc->watch_mu);
    if (job->watched) {
        if (job->wprev)
            job->wprev->wnext = job->wnext;
        else
            svc->watch = job->wnext;
        if (job->wnext)
            job->wnext->wprev = job->wprev;
        job->wprev = job->wnext = NULL;
        job->watched = 0;
        dropped = 1;
    }
    pthread_mutex_unlock(&svc->watch_mu);
    if (dropped)
        job_unref(job);
}

/* Claims the right to answer job: 1 for the first caller, 0 after. */
static int claim(bt_job *job)
{
    int expect = 0;
    return atomic_compare_exchange_strong(&job->answered, &expect, 1);
}

/* Hands resp to the transport (which takes its body); once per job, after claim. */
static void answer(bt_job *job, bt_http_response *resp)
{
    bt_service *svc = job->svc;
    if (resp->body.oom)
        set_error(resp, 500, "out of memory encoding the response");
    double t = bt_now() - job->start;
    bt_stats_request(bt_batcher_infer_stats(svc->batcher), resp->status < 400, t);
    record(svc, job->endpoint, resp->status, t);
    if (job->log_line)
        log_request(job->log_line, resp->status, t);
    atomic_fetch_sub(&svc->pending, 1);
    job->done(job->ctx, resp);
    bt_buf_free(&resp->body); /* done took the body; this frees whatever it left */
}

/* libtorch's allocator says "DefaultCPUAllocator: not enough memory: you tried to allocate
 * N bytes": a server fault, and not words for a client. */
static int is_allocator_message(const char *m)
{
    return strstr(m, "DefaultCPUAllocator") || strstr(m, "tried to allocate") ||
           strstr(m, "not enough memory");
}

static void job_done(void *ctx, int status, DLManagedTensor **outputs, size_t n_outputs,
                     int is_tuple, const bt_error *err)
{
    (void)is_tuple;
    bt_job *job = ctx;
    bt_service *svc = job->svc;
    unwatch(job);
    if (!claim(job)) { /* the timer answered it already: drop the late result */
        for (size_t k = 0; status == 0 && k < n_outputs; k++)
            if (outputs[k]->deleter)
                outputs[k]->deleter(outputs[k]);
        job_unref(job);
        return;
    }
    bt_http_response resp;
    response_init(&resp);
    if (status == 0) {
        double encode_start = bt_now();
        encode_outputs(job, outputs, n_outputs, &resp);
        bt_duration_add(&bt_batcher_infer_stats(svc->batcher)->compute_output,
                        bt_now() - encode_start, 0);
        for (size_t k = 0; k < n_outputs; k++)
            if (outputs[k]->deleter)
                outputs[k]->deleter(outputs[k]);
    } else if (err->kind == BT_ERR_NO_MEMORY || err->kind == BT_ERR_INTERNAL ||
               (err->kind == BT_ERR_INFERENCE && is_allocator_message(err->message))) {
        fprintf(stderr, "berth: forward failed: %s\n", err->message);
        set_error(&resp, 500, "the model ran out of memory or failed on this request "
                              "(details in the server log)");
    } else {
        set_from_error(&resp, err);
    }
    answer(job, &resp);
    job_unref(job);
}

/* Answers each job of the list (linked through wnext, already off the watch list) with
 * 503 unless its forward answered first. */
static void expire_list(bt_service *svc, bt_job *list, int shutdown)
{
    while (list) {
        bt_job *job = list;
        list = job->wnext;
        job->wnext = NULL;
        if (claim(job)) {
            bt_http_response resp;
            response_init(&resp);
            if (shutdown)
                set_error(&resp, 503, "the server is shutting down: the request did not finish "
                                      "within the grace period");
            else
                set_errorf(&resp, 503, "the request did not finish within its deadline of "
                                       "%g ms (--timeout-ms)",
                           svc->timeout_ms);
            resp.retry_after = 1;
            atomic_fetch_add(&svc->expired, 1);
            answer(job, &resp);
        }
        job_unref(job); /* the list's reference */
    }
}

/* The deadline timer: answers jobs whose deadline passed, whatever their forward does. */
static void *timer_main(void *arg)
{
    bt_service *svc = arg;
    pthread_mutex_lock(&svc->watch_mu);
    while (!svc->timer_stop) {
        double now = bt_now(), next = 0;
        bt_job *due = NULL;
        for (bt_job *j = svc->watch, *nx; j; j = nx) {
            nx = j->wnext;
            if (j->deadline <= 0)
                continue;
            if (j->deadline <= now) {
                if (j->wprev)
                    j->wprev->wnext = j->wnext;
                else
                    svc->watch = j->wnext;
                if (j->wnext)
                    j->wnext->wprev = j->wprev;
                j->wprev = NULL;
                j->watched = 0;
                j->wnext = due;
                due = j;
            } else if (next == 0 || j->deadline < next) {
                next = j->deadline;
            }
        }
        if (due) {
            pthread_mutex_unlock(&svc->watch_mu);
            expire_list(svc, due, 0);
            pthread_mutex_lock(&svc->watch_mu);
            continue;
        }
        svc->timer_next = next;
        if (next == 0) {
            pthread_cond_wait(&svc->watch_cv, &svc->watch_mu);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            double wait = next - now + 0.0005;
            ts.tv_sec += (time_t)wait;
            ts.tv_nsec += (long)((wait - (double)(time_t)wait) * 1e9);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&svc->watch_cv, &svc->watch_mu, &ts);
        }
    }
    pthread_mutex_unlock(&svc->watch_mu);
    return NULL;
}

void bt_service_expire_all(bt_service *svc)
{
    atomic_store(&svc->state, STATE_STOPPING);
    pthread_mutex_lock(&svc->watch_mu);
    bt_job *all = svc->watch;
    svc->watch = NULL;
    for (bt_job *j = all; j; j = j->wnext) {
        j->wprev = NULL;
        j->watched = 0;
    }
    pthread_mutex_unlock(&svc->watch_mu);
    expire_list(svc, all, 1);
    bt_batcher_cancel_queued(svc->batcher, "the server is shutting down");
}

void bt_service_submit(bt_service *svc, bt_job *job, bt_response_fn done, void *ctx)
{
    job->done = done;
    job->ctx = ctx;
    double timeout_ms = 0;
    if (svc->timeout_ms > 0) {
        job->deadline = job->start + svc->timeout_ms / 1000.0;
        timeout_ms = (job->deadline - bt_now()) * 1000.0;
        if (timeout_ms < 0.001)
            timeout_ms = 0.001;
    }
    atomic_store(&job->refs, 2);
    pthread_mutex_lock(&svc->watch_mu);
    job->wnext = svc->watch;
    if (svc->watch)
        svc->watch->wprev = job;
    svc->watch = job;
    job->watched = 1;
    if (job->deadline > 0 && (svc->timer_next == 0 || job->deadline < svc->timer_next)) {
        svc->timer_next = job->deadline;
        pthread_cond_signal(&svc->watch_cv);
    }
    pthread_mutex_unlock(&svc->watch_mu);
    bt_error err = {BT_OK, ""};
    size_t n = job->n_in;
    job->n_in = 0; /* the batcher owns the tensors from here on, on every path */
    if (bt_batcher_submit_announced(svc->batcher, job->in, n, timeout_ms, 1, job_done, job,
                                    &err) != 0)
        job_done(job, -1, NULL, 0, 0, &err);
}

typedef struct sync_ctx {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    bt_http_response *resp;
} sync_ctx;

static void sync_done(void *ctx, bt_http_response *resp)
{
    sync_ctx *s = ctx;
    pthread_mutex_lock(&s->mu);
    *s->resp = *resp;
    memset(&resp->body, 0, sizeof resp->body);
    s->finished = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void bt_service_handle_sync(bt_service *svc, const bt_http_request *req,
                            bt_http_response *resp)
{
    bt_job *job;
    if (bt_service_begin(svc, req, resp, &job) == 0)
        return;
    sync_ctx s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.resp = resp;
    bt_service_submit(svc, job, sync_done, &s);
    pthread_mutex_lock(&s.mu);
    while (!s.finished)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
}

void bt_service_metrics(bt_service *svc, bt_buf *out)
{
    bt_buf_puts(out, "# HELP berth_requests_total HTTP requests by endpoint and status code.\n"
                     "# TYPE berth_requests_total counter\n");
    for (int e = 0; e < N_EP; e++)
        for (int c = 0; c < N_CODES; c++) {
            uint64_t v = atomic_load_explicit(&svc->counts[e][c], memory_order_relaxed);
            if (v)
                bt_buf_printf(out, "berth_requests_total{endpoint=\"%s\",code=\"%d\"} %llu\n",
                              EP_NAMES[e], c, (unsigned long long)v);
        }
    int first = 1;
    for (int e = 0; e < N_EP; e++) {
        uint64_t counts[BT_HIST_MAX_BOUNDS + 1], total = 0;
        bt_histogram_counts(&svc->latency[e], counts);
        for (size_t i = 0; i <= svc->latency[e].n_bounds; i++)
            total += counts[i];
        if (!total)
            continue;
        char labels[64];
        snprintf(labels, sizeof labels, "endpoint=\"%s\"", EP_NAMES[e]);
        bt_histogram_render(out, &svc->latency[e], "berth_request_duration_seconds",
                            first ? "Time from request to response, by endpoint." : NULL,
                            labels);
        first = 0;
    }
    bt_buf_printf(out,
                  "# HELP berth_inflight_requests Requests received and not yet answered.\n"
                  "# TYPE berth_inflight_requests gauge\nberth_inflight_requests %lld\n",
                  (long long)atomic_load(&svc->pending));
    bt_batcher *b = svc->batcher;
    bt_histogram_render(out, bt_batcher_queue_seconds(b), "berth_queue_seconds",
                        "Time requests waited in the batcher's queue.", "");
    bt_histogram_render(out, bt_batcher_compute_seconds(b), "berth_compute_seconds",
                        "Time per forward (one batch).", "");
    bt_histogram_render(out, bt_batcher_batch_sizes(b), "berth_batch_size",
                        "Rows per forward.", "");
    bt_batcher_stats st;
    bt_batcher_get_stats(b, &st);
    bt_buf_printf(out,
                  "# HELP berth_batcher_queued Requests waiting in the batcher's queue.\n"
                  "# TYPE berth_batcher_queued gauge\nberth_batcher_queued %llu\n"
                  "# HELP berth_batcher_overloaded_total Requests refused: queue full.\n"
                  "# TYPE berth_batcher_overloaded_total counter\n"
                  "berth_batcher_overloaded_total %llu\n"
                  "# HELP berth_batcher_timeouts_total Requests that timed out in the queue.\n"
                  "# TYPE berth_batcher_timeouts_total counter\n"
                  "berth_batcher_timeouts_total %llu\n"
                  "# HELP berth_batch_retries_total Batched forwards that failed and were rerun "
                  "one request at a time, so that each request got its own answer.\n"
                  "# TYPE berth_batch_retries_total counter\n"
                  "berth_batch_retries_total %llu\n"
                  "# HELP berth_expired_total Requests answered 503 by the deadline timer "
                  "(--timeout-ms) or at the end of the shutdown grace period.\n"
                  "# TYPE berth_expired_total counter\n"
                  "berth_expired_total %llu\n",
                  (unsigned long long)st.queued, (unsigned long long)st.overloaded,
                  (unsigned long long)st.timeouts, (unsigned long long)st.retries,
                  (unsigned long long)atomic_load(&svc->expired));
    uint64_t bits = atomic_load(&svc->warmup_bits);
    double warm;
    memcpy(&warm, &bits, sizeof warm);
    bt_buf_printf(out,
                  "# HELP berth_model_load_seconds Time spent loading the model.\n"
                  "# TYPE berth_model_load_seconds gauge\nberth_model_load_seconds %.6f\n"
                  "# HELP berth_model_warmup_seconds Time spent warming the model up.\n"
                  "# TYPE berth_model_warmup_seconds gauge\nberth_model_warmup_seconds %.6f\n"
                  "# HELP berth_ready Whether the server is ready (1) or not (0).\n"
                  "# TYPE berth_ready gauge\nberth_ready %d\n"
                  "# HELP berth_batch_limit Rows per forward in effect (max_batch_size, or "
                  "less when warm-up measured bigger batches as dearer per row).\n"
                  "# TYPE berth_batch_limit gauge\nberth_batch_limit %d\n",
                  svc->model->load_seconds, warm, bt_service_ready(svc),
                  bt_service_batching(svc) ? bt_batcher_batch_limit(svc->batcher) : 1);
}

/* ------------------------------------------------------------------ libmicrohttpd */

/* libmicrohttpd 0.9.75 parses HTTP/1.1 leniently; berth refuses, before routing, what could
 * let a request be read two ways (see check_headers), bounds connections per client and
 * the memory of unfinished bodies, and parses large bodies off the HTTP threads. */

typedef struct conn_ctx conn_ctx;

/* One open connection, for the header deadline: until its first request head is in, the
 * reaper shuts the socket down when the deadline passes (libmicrohttpd's own timeout is
 * reset by every byte, so a client sending one byte at a time would never meet it). */
typedef struct sock_ctx {
    struct sock_ctx *prev, *next;
    int fd;          /* -1 once shut down */
    double deadline; /* bt_now() seconds */
    _Atomic int headed;
} sock_ctx;

struct bt_server {
    bt_service *svc;
    struct MHD_Daemon *daemon;
    bt_server_params params;
    char *cert;
    char *key;
    int port;
    _Atomic int64_t inflight;    /* requests begun (a conn_ctx alive) */
    _Atomic int64_t suspended;   /* connections suspended and not yet resumed */
    _Atomic int64_t connections; /* open connections */
    _Atomic size_t body_bytes;   /* reserved by unfinished bodies, against body_budget */
    _Atomic int draining;
    int quiesced;
    pthread_mutex_t mu; /* drain and free */
    /* The parse thread: bodies over BT_INLINE_PARSE_BYTES are parsed here. */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    conn_ctx *phead, *ptail;
    int pstop;
    int parser_started;
    pthread_t parser;
    /* Open connections and the reaper that enforces the header deadline. */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    sock_ctx *socks;
    int rstop;
    int reaper_started;
    pthread_t reaper;
};

struct conn_ctx {
    bt_server *srv;
    struct MHD_Connection *conn;
    int started;       /* the handler has seen this request */
    int bad_path;      /* the raw URI holds a control byte, plain or percent-encoded */
    int close;         /* answer with Connection: close */
    bt_buf body;
    size_t reserved;   /* bytes of body_budget held */
    size_t expected;   /* Content-Length + 1; 0 when chunked */
    int refused;       /* 413 or 503: a chunked body crossed a limit; the rest is discarded */
    size_t discarded;  /* bytes dropped since */
    _Atomic int state; /* 0 receiving, 1 waiting for the parse or the batch, 2 response ready */
    bt_http_response resp;
    double start;
    /* Copies for the parse thread (the connection's strings live only in its callbacks). */
    char *method, *path, *content_type, *authorization, *header_length, *content_encoding;
    conn_ctx *pnext;
    double received; /* when the body was complete */
};

static void body_release(conn_ctx *c)
{
    bt_buf_free(&c->body);
    if (c->reserved) {
        atomic_fetch_sub(&c->srv->body_bytes, c->reserved);
        c->reserved = 0;
    }
}

/* Reserves `bytes` more of the budget for unfinished bodies; 0, or -1 when it is spent. */
static int body_reserve(conn_ctx *c, size_t bytes)
{
    size_t now = atomic_fetch_add(&c->srv->body_bytes, bytes) + bytes;
    if (now > c->srv->params.body_budget) {
        atomic_fetch_sub(&c->srv->body_bytes, bytes);
        return -1;
    }
    c->reserved += bytes;
    return 0;
}

/* Appends n bytes, growing the buffer as data arrives (never from what Content-Length
 * claims). -1 when the budget is spent, -2 out of memory. */
static int body_append(conn_ctx *c, const char *data, size_t n)
{
    size_t need = c->body.len + n + 1;
    if (need > c->body.cap) {
        size_t cap = c->body.cap ? c->body.cap : 16384;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        size_t limit = c->expected ? c->expected : c->srv->params.max_body_bytes + 1;
        if (cap > limit)
            cap = limit > need ? limit : need;
        if (cap > c->reserved && body_reserve(c, cap - c->reserved) != 0)
            return -1;
        char *p = realloc(c->body.data, cap);
        if (!p)
            return -2;
        c->body.data = p;
        c->body.cap = cap;
    }
    memcpy(c->body.data + c->body.len, data, n);
    c->body.len += n;
    c->body.data[c->body.len] = '\0';
    return 0;
}

static enum MHD_Result send_response(conn_ctx *c)
{
    bt_http_response *r = &c->resp;
    bt_http_response_compress(r, MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_ACCEPT_ENCODING));
    struct MHD_Response *mr =
        MHD_create_response_from_buffer(r->body.len, r->body.len ? r->body.data : NULL,
                                        r->body.len ? MHD_RESPMEM_MUST_FREE
                                                    : MHD_RESPMEM_PERSISTENT);
    if (!mr)
        return MHD_NO;
    if (r->body.len)
        memset(&r->body, 0, sizeof r->body); /* MHD frees it now */
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    if (r->header_length >= 0) {
        char v[32];
        snprintf(v, sizeof v, "%lld", r->header_length);
        MHD_add_response_header(mr, "Inference-Header-Content-Length", v);
    }
    if (r->retry_after > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", r->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, v);
    }
    if (r->www_authenticate)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (r->allow)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->content_encoding)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_ENCODING, r->content_encoding);
    if (atomic_load(&c->srv->draining) || c->close)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return ok;
}

/* Answers now with status and message, recorded, closing the connection after. */
static enum MHD_Result refuse(conn_ctx *c, const char *url, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result refuse(conn_ctx *c, const char *url, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    response_init(&c->resp);
    set_error(&c->resp, status, msg);
    if (status == 503)
        c->resp.retry_after = 1;
    c->close = 1;
    body_release(c);
    bt_service_record(c->srv->svc, url, status, bt_now() - c->start);
    atomic_store(&c->state, 2);
    return send_response(c);
}

static void resume(conn_ctx *c)
{
    bt_server *srv = c->srv;
    atomic_store(&c->state, 2);
    MHD_resume_connection(c->conn);
    atomic_fetch_sub(&srv->suspended, 1); /* c may be gone now */
}

static void on_job_done(void *ctx, bt_http_response *resp)
{
    conn_ctx *c = ctx;
    c->resp = *resp;
    memset(&resp->body, 0, sizeof resp->body);
    resume(c);
}

/* What the request's headers say about its body, counted over every header line. */
typedef struct header_scan {
    int n_length, n_encoding, n_host;
    const char *length, *encoding;
    const char *bad_name; /* a header name with a space, tab or control byte */
} header_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    (void)key_size;
    (void)value_size;
    header_scan *h = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        h->n_length++;
        h->length = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        h->n_encoding++;
        h->encoding = value;
    } else if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0) {
        h->n_host++;
    }
    for (const unsigned char *p = (const unsigned char *)key; *p && !h->bad_name; p++)
        if (*p <= 0x20 || *p == 0x7f)
            h->bad_name = key;
    return MHD_YES;
}

/* Refuses (400, then close) a request whose body could be framed two ways by two HTTP
 * parsers (request smuggling): several Content-Length headers, Content-Length with
 * Transfer-Encoding, a Transfer-Encoding other than chunked, a Content-Length that is not
 * a plain decimal number; also HTTP/1.1 without exactly one Host, and header names with
 * spaces or control bytes. Returns NULL when the headers are fine, else the reason. */
static const char *check_headers(struct MHD_Connection *conn, const char *version,
                                 char *why, size_t size)
{
    header_scan h = {0, 0, 0, NULL, NULL, NULL};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, &h);
    if (h.bad_name)
        snprintf(why, size, "malformed header name '%.40s'", h.bad_name);
    else if (h.n_length > 1)
        snprintf(why, size, "%d Content-Length headers: send one", h.n_length);
    else if (h.n_encoding && h.n_length)
        snprintf(why, size, "both Transfer-Encoding and Content-Length: send one");
    else if (h.n_encoding > 1 || (h.n_encoding && strcasecmp(h.encoding, "chunked") != 0))
        snprintf(why, size, "Transfer-Encoding '%.40s' is not supported: only chunked",
                 h.encoding);
    else if (h.n_length && (!h.length[0] || strspn(h.length, "0123456789") != strlen(h.length)))
        snprintf(why, size, "Content-Length '%.40s' is not a non-negative decimal number",
                 h.length);
    else if (h.n_host != 1 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        snprintf(why, size, "HTTP/1.1 requests need exactly one Host header, got %d", h.n_host);
    else
        return NULL;
    return why;
}

/* The raw URI, before percent-decoding: a control byte (%00 truncates the decoded path,
 * %0A forges log lines) marks the request for a 400. Also allocates the request's context,
 * which libmicrohttpd hands to on_request and on_completed. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    bt_server *srv = cls;
    conn_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->conn = conn;
    c->start = bt_now();
    atomic_fetch_add(&srv->inflight, 1);
    /* libmicrohttpd ends the URI with a NUL where the space before "HTTP/1.x" was: a URI
     * that ends earlier held a NUL byte of its own (the request line is all in its buffer,
     * so the bytes after the terminator are there to read). */
    size_t len = strlen(uri);
    c->bad_path = strncmp(uri + len + 1, "HTTP/", 5) != 0;
    for (const char *p = uri; *p && !c->bad_path; p++) {
        unsigned char b = (unsigned char)*p;
        if (b == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            char hex[3] = {p[1], p[2], 0};
            b = (unsigned char)strtol(hex, NULL, 16);
        }
        c->bad_path = b < 0x20 || b == 0x7f;
    }
    return c;
}

/* libmicrohttpd reports a connection closed before it closes the socket, so the reaper
 * (which holds smu) never shuts down a descriptor that was reused. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    bt_server *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&srv->connections, 1);
        sock_ctx *sc = calloc(1, sizeof *sc);
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!sc || !info) { /* untracked: libmicrohttpd's timeout still applies */
            free(sc);
            return;
        }
        sc->fd = info->connect_fd;
        sc->deadline = bt_now() + srv->params.header_timeout_s;
        pthread_mutex_lock(&srv->smu);
        sc->next = srv->socks;
        if (srv->socks)
            srv->socks->prev = sc;
        srv->socks = sc;
        pthread_mutex_unlock(&srv->smu);
        *socket_context = sc;
        return;
    }
    atomic_fetch_sub(&srv->connections, 1);
    sock_ctx *sc = *socket_context;
    if (!sc)
        return;
    pthread_mutex_lock(&srv->smu);
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        srv->socks = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    pthread_mutex_unlock(&srv->smu);
    free(sc);
    *socket_context = NULL;
}

/* Every 200 ms: shuts down connections past the header deadline, and those whose client
 * already closed. libmicrohttpd's edge-triggered epoll misses a FIN that arrives with the
 * last bytes of a half-sent head (2,200 clients that sent 60 bytes and closed sat in
 * CLOSE-WAIT until the timeout); after shutdown() it sees the end and closes them. */
static void *reaper_main(void *arg)
{
    bt_server *srv = arg;
    struct pollfd *polls = NULL;
    sock_ctx **which = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&srv->smu);
    while (!srv->rstop) {
        double now = bt_now();
        size_t n = 0;
        for (sock_ctx *sc = srv->socks; sc; sc = sc->next) {
            if (sc->fd < 0 || atomic_load(&sc->headed))
                continue;
            if (now > sc->deadline) {
                shutdown(sc->fd, SHUT_RDWR); /* libmicrohttpd sees the end and closes it */
                sc->fd = -1;
                continue;
            }
            if (n == cap) {
                size_t grown = cap ? cap * 2 : 64;
                struct pollfd *p = realloc(polls, grown * sizeof *p);
                if (p)
                    polls = p;
                sock_ctx **w = p ? realloc(which, grown * sizeof *w) : NULL;
                if (w)
                    which = w;
                if (!p || !w)
                    continue; /* out of memory: this one waits for its deadline */
                cap = grown;
            }
            polls[n] = (struct pollfd){.fd = sc->fd, .events = POLLRDHUP};
            which[n++] = sc;
        }
        if (n > 0 && poll(polls, (nfds_t)n, 0) > 0) {
            for (size_t i = 0; i < n; i++) {
                if (polls[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
                    shutdown(which[i]->fd, SHUT_RDWR);
                    which[i]->fd = -1;
                }
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->scv, &srv->smu, &ts);
    }
    pthread_mutex_unlock(&srv->smu);
    free(polls);
    free(which);
    return NULL;
}

static char *dup_or_null(const char *s, int *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = 1;
    return d;
}

/* Hands a large body to the parse thread (the connection stays suspended meanwhile). */
static int defer_parse(conn_ctx *c, const char *method, const char *url)
{
    struct MHD_Connection *conn = c->conn;
    int oom = 0;
    c->method = dup_or_null(method, &oom);
    c->path = dup_or_null(url, &oom);
    c->content_type = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE), &oom);
    c->authorization = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION), &oom);
    c->header_length = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length"),
        &oom);
    c->content_encoding = dup_or_null(
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING), &oom);
    if (oom)
        return -1;
    bt_server *srv = c->srv;
    c->received = bt_now();
    atomic_store(&c->state, 1);
    atomic_fetch_add(&srv->suspended, 1);
    MHD_suspend_connection(conn);
    pthread_mutex_lock(&srv->pmu);
    c->pnext = NULL;
    if (srv->ptail)
        srv->ptail->pnext = c;
    else
        srv->phead = c;
    srv->ptail = c;
    pthread_cond_signal(&srv->pcv);
    pthread_mutex_unlock(&srv->pmu);
    return 0;
}

static void *parser_main(void *arg)
{
    bt_server *srv = arg;
    pthread_mutex_lock(&srv->pmu);
    for (;;) {
        while (!srv->phead && !srv->pstop)
            pthread_cond_wait(&srv->pcv, &srv->pmu);
        conn_ctx *c = srv->phead;
        if (!c)
            break;
        srv->phead = c->pnext;
        if (!srv->phead)
            srv->ptail = NULL;
        pthread_mutex_unlock(&srv->pmu);
        bt_http_request req = {.method = c->method,
                               .path = c->path,
                               .content_type = c->content_type,
                               .authorization = c->authorization,
                               .header_length = c->header_length,
                               .content_encoding = c->content_encoding,
                               .body = c->body.data,
                               .body_len = c->body.len,
                               .max_body = srv->params.max_body_bytes,
                               .received = c->received};
        bt_job *job;
        int rc = bt_service_begin(srv->svc, &req, &c->resp, &job);
        body_release(c);
        if (rc == 0)
            resume(c);
        else
            bt_service_submit(srv->svc, job, on_job_done, c);
        pthread_mutex_lock(&srv->pmu);
    }
    pthread_mutex_unlock(&srv->pmu);
    return NULL;
}

/* The first call for a request: its headers are all in. */
static enum MHD_Result begin_request(conn_ctx *c, const char *url, const char *version)
{
    bt_server *srv = c->srv;
    struct MHD_Connection *conn = c->conn;
    c->started = 1;
    /* A connection that sent a whole request head gets the idle timeout (once: libmicrohttpd
     * keeps such connections on a list it walks); until then the header deadline (the
     * reaper) and the shorter timeout set on the daemon apply. */
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    sock_ctx *sc = info ? info->socket_context : NULL;
    if (!sc || !atomic_load(&sc->headed)) {
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)srv->params.idle_timeout_s);
        if (sc)
            atomic_store(&sc->headed, 1);
    }
    char why[160];
    if (check_headers(conn, version, why, sizeof why))
        return refuse(c, url, 400, "%s", why);
    if (c->bad_path)
        return refuse(c, url, 400, "the path contains a control byte (after percent-decoding)");
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        errno = 0;
        unsigned long long n = strtoull(cl, NULL, 10);
        if (errno || n > srv->params.max_body_bytes)
            return refuse(c, url, 413,
                          "request body of %s bytes is over the limit of %zu bytes "
                          "(--max-body-mb)",
                          cl, srv->params.max_body_bytes);
        /* Held against the budget from now on (but not allocated before it arrives). */
        c->expected = (size_t)n + 1;
        if (n > 0 && body_reserve(c, c->expected) != 0)
            return refuse(c, url, 503,
                          "the server holds too many unfinished request bodies "
                          "(--max-pending-body-mb): retry later");
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)cls;
    conn_ctx *c = *con_cls;
    if (!c)
        return MHD_NO; /* out of memory in on_uri */
    if (!c->started)
        return begin_request(c, url, version);
    if (atomic_load(&c->state) == 2)
        return send_response(c);
    bt_server *srv = c->srv;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        /* Only a chunked body gets here over the limits (a Content-Length was checked
         * first). Its memory goes at once. libmicrohttpd 0.9.75 can answer only before or
         * after a body, so up to another max_body_bytes are read and dropped for the 413 or
         * 503 to be sent after the body; past that the connection is closed. */
        if (c->refused) {
            c->discarded += n;
            if (c->discarded <= srv->params.max_body_bytes)
                return MHD_YES;
            bt_service_record(srv->svc, url, c->refused, bt_now() - c->start);
            return MHD_NO;
        }
        int rc = c->body.len + n > srv->params.max_body_bytes ? 413
                 : body_append(c, upload_data, n) != 0           ? 503
                                                                 : 0;
        if (rc) {
            c->refused = rc;
            body_release(c);
        }
        return MHD_YES;
    }
    if (c->refused == 413)
        return refuse(c, url, 413, "request body is over the limit of %zu bytes (--max-body-mb)",
                      srv->params.max_body_bytes);
    if (c->refused)
        return refuse(c, url, 503, "the server holds too many unfinished request bodies, or "
                                   "is out of memory: retry later");
    if (c->body.len > BT_INLINE_PARSE_BYTES && defer_parse(c, method, url) == 0)
        return MHD_YES;
    bt_http_request req = {
        .method = method,
        .path = url,
        .content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE),
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_AUTHORIZATION),
        .header_length = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     "Inference-Header-Content-Length"),
        .content_encoding = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                        MHD_HTTP_HEADER_CONTENT_ENCODING),
        .body = c->body.data,
        .body_len = c->body.len,
        .max_body = srv->params.max_body_bytes,
    };
    bt_job *job;
    if (bt_service_begin(srv->svc, &req, &c->resp, &job) == 0) {
        body_release(c);
        atomic_store(&c->state, 2);
        return send_response(c);
    }
    body_release(c); /* the job holds its own tensors */
    atomic_store(&c->state, 1);
    atomic_fetch_add(&srv->suspended, 1);
    MHD_suspend_connection(conn);
    bt_service_submit(srv->svc, job, on_job_done, c);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    bt_server *srv = cls;
    conn_ctx *c = *con_cls;
    if (!c)
        return;
    body_release(c);
    bt_buf_free(&c->resp.body);
    free(c->method);
    free(c->path);
    free(c->content_type);
    free(c->authorization);
    free(c->header_length);
    free(c->content_encoding);
    free(c);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

static void read_pem_free(bt_server *srv)
{
    free(srv->cert);
    free(srv->key);
}

static void server_release(bt_server *srv)
{
    if (srv->reaper_started) {
        pthread_mutex_lock(&srv->smu);
        srv->rstop = 1;
        pthread_cond_signal(&srv->scv);
        pthread_mutex_unlock(&srv->smu);
        pthread_join(srv->reaper, NULL);
    }
    if (srv->parser_started) {
        pthread_mutex_lock(&srv->pmu);
        srv->pstop = 1;
        pthread_cond_signal(&srv->pcv);
        pthread_mutex_unlock(&srv->pmu);
        pthread_join(srv->parser, NULL);
    }
    pthread_cond_destroy(&srv->pcv);
    pthread_mutex_destroy(&srv->pmu);
    pthread_cond_destroy(&srv->scv);
    pthread_mutex_destroy(&srv->smu);
    pthread_mutex_destroy(&srv->mu);
    read_pem_free(srv);
    free(srv);
}

int bt_server_start(bt_service *svc, const bt_server_params *params, bt_server **out,
                    bt_error *err)
{
    *out = NULL;
    if (params->port < 0 || params->port > 65535)
        return bt_error_set(err, BT_ERR_VALUE, "port must be between 0 and 65535, got %d",
                            params->port);
    if (params->threads < 1 || params->threads > BT_MAX_HTTP_THREADS)
        return bt_error_set(err, BT_ERR_VALUE, "threads must be between 1 and %d, got %d",
                            BT_MAX_HTTP_THREADS, params->threads);
    if (params->max_body_bytes < 1 || params->max_body_bytes > BT_MAX_BODY_BYTES_LIMIT)
        return bt_error_set(err, BT_ERR_VALUE,
                            "max_body_bytes must be between 1 and %zu, got %zu",
                            BT_MAX_BODY_BYTES_LIMIT, params->max_body_bytes);
    if (!params->tls_cert != !params->tls_key)
        return bt_error_set(err, BT_ERR_VALUE,
                            "HTTPS needs both a certificate and a key (--tls-cert and --tls-key)");
    bt_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    srv->svc = svc;
    srv->params = *params;
    srv->params.host = NULL;
    bt_server_params *p = &srv->params;
    if (p->connection_limit <= 0)
        p->connection_limit = BT_DEFAULT_CONNECTION_LIMIT;
    if (p->idle_timeout_s <= 0)
        p->idle_timeout_s = BT_DEFAULT_IDLE_TIMEOUT_S;
    if (p->header_timeout_s <= 0)
        p->header_timeout_s = BT_DEFAULT_HEADER_TIMEOUT_S;
    if (p->per_ip_connections <= 0)
        p->per_ip_connections = BT_DEFAULT_PER_IP_CONNECTIONS;
    if (p->body_budget == 0)
        p->body_budget = p->max_body_bytes > SIZE_MAX / BT_DEFAULT_BODY_BUDGET_FACTOR
                             ? SIZE_MAX
                             : p->max_body_bytes * BT_DEFAULT_BODY_BUDGET_FACTOR;
    if (p->body_budget < p->max_body_bytes + 1)
        p->body_budget = p->max_body_bytes + 1; /* one largest body always fits */
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->pmu, NULL);
    pthread_cond_init(&srv->pcv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&srv->smu, NULL);
    pthread_cond_init(&srv->scv, &ca);
    pthread_condattr_destroy(&ca);
    if (params->tls_cert) {
        srv->cert = strdup(params->tls_cert);
        srv->key = strdup(params->tls_key);
        if (!srv->cert || !srv->key) {
            server_release(srv);
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        }
    }
    int e = pthread_create(&srv->parser, NULL, parser_main, srv);
    if (e != 0) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_INTERNAL, "cannot start the parse thread: %s",
                            strerror(e));
    }
    srv->parser_started = 1;
    e = pthread_create(&srv->reaper, NULL, reaper_main, srv);
    if (e != 0) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_INTERNAL, "cannot start the header-deadline thread: %s",
                            strerror(e));
    }
    srv->reaper_started = 1;

    char port[16];
    snprintf(port, sizeof port, "%d", params->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    const char *host = params->host && params->host[0] ? params->host : "0.0.0.0";
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0 || !res) {
        server_release(srv);
        return bt_error_set(err, BT_ERR_VALUE, "cannot use host '%.200s': %s", host,
                            gai_strerror(gai));
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (res->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (srv->cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[16];
    int k = 0;
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, res->ai_addr};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection,
                                        srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_URI_LOG_CALLBACK, (intptr_t)on_uri, srv};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, p->connection_limit, NULL};
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                        p->per_ip_connections, NULL};
    /* The daemon-wide timeout is the header timeout; begin_request raises it to the idle
     * timeout once a connection has sent a request head. */
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, p->header_timeout_s, NULL};
    if (params->threads > 1)
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, params->threads, NULL};
    if (srv->cert) {
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, srv->cert};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, srv->key};
        opts[k++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                            (void *)BT_TLS_PRIORITIES};
    }
    opts[k++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    srv->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_ARRAY,
                                   opts, MHD_OPTION_END);
    freeaddrinfo(res);
    if (!srv->daemon) {
        int e2 = errno;
        server_release(srv);
        if (params->tls_cert)
            return bt_error_set(err, BT_ERR_VALUE,
                                "cannot start HTTPS on %.200s:%d: the TLS certificate and key "
                                "must be PEM text of a certificate and its matching private key"
                                "%s%s",
                                host, params->port, e2 ? "; or the address failed: " : "",
                                e2 ? strerror(e2) : "");
        return bt_error_set(err, BT_ERR_VALUE, "cannot listen on %.200s:%d: %s", host,
                            params->port, e2 ? strerror(e2) : "the address is not usable");
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon,
                                                           MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : params->port;
    *out = srv;
    return 0;
}

int bt_server_port(const bt_server *srv) { return srv->port; }

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int settled(bt_server *srv)
{
    return atomic_load(&srv->inflight) == 0 && atomic_load(&srv->suspended) == 0;
}

void bt_server_drain(bt_server *srv, double grace_s)
{
    pthread_mutex_lock(&srv->mu);
    bt_service_set_ready(srv->svc, 0);
    atomic_store(&srv->draining, 1);
    double deadline = bt_now() + (grace_s > 0 ? grace_s : 0);
    while (!settled(srv) && bt_now() < deadline)
        sleep_ms(5);
    /* Keep-alive clients get Connection: close with their answers; give them a moment to
     * close before the listener does, so that nothing arrives on a closing connection. */
    double settle = bt_now() + 0.25 < deadline ? bt_now() + 0.25 : deadline;
    while (atomic_load(&srv->connections) > 0 && settled(srv) && bt_now() < settle)
        sleep_ms(5);
    if (!settled(srv))
        bt_service_expire_all(srv->svc); /* the grace period is over: 503 to what is left */
    if (!srv->quiesced) {
        MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
        srv->quiesced = 1;
    }
    double flush = bt_now() + 1.0;
    while (!settled(srv) && bt_now() < flush) {
        if (atomic_load(&srv->suspended) > 0 && bt_now() >= deadline)
            bt_service_expire_all(srv->svc);
        sleep_ms(5);
    }
    pthread_mutex_unlock(&srv->mu);
}

void bt_server_free(bt_server *srv)
{
    if (!srv)
        return;
    pthread_mutex_lock(&srv->mu);
    /* No connection may stay suspended when the daemon stops (libmicrohttpd aborts):
     * forwards get a moment to finish, then what is left is answered 503. */
    double patience = bt_now() + 2.0;
    while (atomic_load(&srv->suspended) > 0) {
        if (bt_now() >= patience)
            bt_service_expire_all(srv->svc);
        sleep_ms(5);
    }
    MHD_stop_daemon(srv->daemon);
    pthread_mutex_unlock(&srv->mu);
    server_release(srv);
}
