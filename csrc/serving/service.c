/*
 * service.c - one model version served: its routes (metadata, config, statistics,
 * inference), the codec, the batcher, the deadline timer, warm-up and its metrics. No
 * Python, no transport: the registry (registry.c) routes requests here.
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "serving/service.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "runtime/tensor.h"
#include "serving/encoding.h"

/* FAILED: warm-up failed, the model is not ready. STOPPING: shutdown past its grace
 * period; inference gets 503 at once. */
enum {
    STATE_STARTING = 0,
    STATE_READY = 1,
    STATE_DRAINING = 2,
    STATE_FAILED = 3,
    STATE_STOPPING = 4
};

struct bt_service {
    bt_model *model;
    char *name;
    int log_requests;
    double timeout_ms;
    int64_t max_rows;
    size_t max_response_bytes;
    bt_batcher_params bp;
    bt_batcher *batcher;
    _Atomic int state;
    _Atomic int64_t pending;
    _Atomic uint64_t warmup_bits; /* seconds, as the bits of a double */
    char failure[1024];           /* why the model failed at start; written before STATE_FAILED */
    char version[24];             /* the decimal version, in paths and answers */
    char *policy_json;            /* Triton's version_policy object for /config */
    pthread_mutex_t versions_mu;
    char *versions_json; /* the model's versions the registry serves: "\"1\",\"2\"" */
    bt_traffic traffic;
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

/* Ends a request answered without a forward. */
static int finish_sync(bt_service *svc, int ep, double start, const bt_http_request *req,
                       const bt_http_response *resp)
{
    bt_traffic_finish(&svc->traffic, svc->log_requests, ep, start, req, resp->status);
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
    if (!svc->name) {
        bt_service_free(svc);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    svc->log_requests = params->log_requests;
    svc->timeout_ms = params->timeout_ms > 0 ? params->timeout_ms : 0;
    svc->max_rows = params->max_rows > 0 ? params->max_rows : BT_DEFAULT_MAX_ROWS;
    svc->max_response_bytes =
        params->max_response_bytes ? params->max_response_bytes : BT_DEFAULT_MAX_RESPONSE_BYTES;
    if (params->version < 1) {
        bt_service_free(svc);
        return bt_error_set(err, BT_ERR_VALUE, "version must be a positive integer, got %lld",
                            (long long)params->version);
    }
    snprintf(svc->version, sizeof svc->version, "%lld", (long long)params->version);
    pthread_mutex_init(&svc->versions_mu, NULL);
    svc->versions_json = malloc(strlen(svc->version) + 3);
    if (svc->versions_json)
        snprintf(svc->versions_json, strlen(svc->version) + 3, "\"%s\"", svc->version);
    svc->policy_json = strdup(params->version_policy_json ? params->version_policy_json : "");
    if (!svc->versions_json || !svc->policy_json) {
        bt_service_free(svc);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    svc->bp = params->batch;
    /* a .pt2 admits batches only up to the range its batch dimension was exported for */
    if (model->max_batch < svc->bp.max_batch_size)
        svc->bp.max_batch_size = (int)model->max_batch;
    bt_traffic_init(&svc->traffic);
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
    if (svc->versions_json)
        pthread_mutex_destroy(&svc->versions_mu);
    free(svc->versions_json);
    free(svc->policy_json);
    free(svc->name);
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

const char *bt_service_name(const bt_service *svc) { return svc->name; }
const char *bt_service_version(const bt_service *svc) { return svc->version; }
const bt_model *bt_service_model(const bt_service *svc) { return svc->model; }

int bt_service_set_versions(bt_service *svc, const int64_t *versions, size_t n)
{
    size_t size = n * 24 + 1;
    char *json = malloc(size), *old;
    if (!json)
        return -1;
    size_t k = 0;
    json[0] = '\0';
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(json + k, size - k, i ? ",\"%lld\"" : "\"%lld\"",
                              (long long)versions[i]);
    pthread_mutex_lock(&svc->versions_mu);
    old = svc->versions_json;
    svc->versions_json = json;
    pthread_mutex_unlock(&svc->versions_mu);
    free(old);
    return 0;
}

/* One forward of `rows` zero rows in the signature's shape (free dimensions after the
 * first are 1), through the batcher; *seconds gets its wall time. */
static int warm_forward(bt_service *svc, size_t n, int rows, double *seconds, bt_error *err)
{
    const bt_model *m = svc->model;
    DLManagedTensor *in[BT_BATCH_MAX_INPUTS] = {0};
    for (size_t i = 0; i < n; i++) {
        const bt_spec *sp = &m->inputs[i];
        int64_t shape[BT_MAX_NDIM];
        int nd = sp->ndim < BT_MAX_NDIM ? sp->ndim : BT_MAX_NDIM;
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
    if (bt_batcher_run(svc->batcher, in, n, 0, outs, BT_MAX_OUTPUTS, &n_out, &is_tuple, err) != 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        return bt_error_set(err, err->kind, "warm-up with batches of %d zero rows failed: %s", rows,
                            msg);
    }
    *seconds = bt_now() - start;
    for (size_t k = 0; k < n_out; k++)
        outs[k]->deleter(outs[k]);
    return 0;
}

/* Starts the batcher's tuner climb with `rounds` forwards of 1 row (they count as the
 * climb's first size), then runs the sizes it asks for while the next forward, predicted
 * from the last one's cost per row, keeps the climb within budget_s seconds. A climb that
 * could not finish within budget_s even if every forward it needs cost no more than the
 * last round does not start: such a model goes ready after its rounds, since timing part
 * of the climb would only delay readiness for forwards that served batches time as well.
 * The rest of the climb, if any, is timed on served batches after readiness. */
static int tune_before_ready(bt_service *svc, size_t n, int rounds, double budget_s, bt_error *err)
{
    char label[256];
    snprintf(label, sizeof label, "'%s' version %s", svc->name, svc->version);
    bt_batcher_tune(svc->batcher, label);
    double t = 0;
    for (int r = 0; r < rounds; r++)
        if (warm_forward(svc, n, 1, &t, err) != 0)
            return -1;
    double per_row = t; /* the last round's, 1 row */
    if (t * bt_batcher_tuning_forwards_left(svc->batcher) > budget_s)
        return 0;
    const double start = bt_now();
    for (int rows; (rows = bt_batcher_tuning_rows(svc->batcher)) > 0;) {
        if (bt_now() - start + per_row * rows > budget_s)
            break;
        if (warm_forward(svc, n, rows, &t, err) != 0)
            return -1;
        per_row = t / rows;
    }
    return 0;
}

int bt_service_warmup(bt_service *svc, int rounds, int tune, double budget_s, double *seconds,
                      bt_error *err)
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
    int max = bt_service_batching(svc) ? svc->bp.max_batch_size : 1;
    if (max > 1 && tune) {
        rc = tune_before_ready(svc, n, rounds, budget_s, err);
    } else {
        for (int r = 0; r < rounds && rc == 0; r++)
            rc = warm_forward(svc, n, 1, &t, err);
        if (rc == 0 && max > 1)
            rc = warm_forward(svc, n, max, &t, err);
    }
    if (rc != 0) {
        char msg[sizeof svc->failure];
        snprintf(msg, sizeof msg, "not ready: %.1000s", err->message);
        bt_service_set_failed(svc, msg);
        return -1;
    }
    bt_stats_reset(bt_batcher_infer_stats(svc->batcher));
    *seconds = bt_now() - start;
    atomic_store(&svc->warmup_bits, bt_double_bits(*seconds));
    return 1;
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
    bt_buf_puts(b, ",\"versions\":[");
    pthread_mutex_lock(&svc->versions_mu);
    bt_buf_puts(b, svc->versions_json);
    pthread_mutex_unlock(&svc->versions_mu);
    bt_buf_puts(b, "],\"platform\":");
    bt_buf_puts(b, strcmp(svc->model->format, "pt2") == 0 ? "\"torch_aoti\""
                                                          : "\"pytorch_torchscript\"");
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
    bt_buf_printf(b,
                  ",\"platform\":\"pytorch_libtorch\",\"backend\":\"pytorch\","
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
    if (svc->policy_json[0])
        bt_buf_printf(b, ",\"version_policy\":%s}", svc->policy_json);
    else
        bt_buf_printf(b, ",\"version_policy\":{\"specific\":{\"versions\":[%s]}}}", svc->version);
}

const char *bt_service_ready_reason(const bt_service *svc)
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
static int bind_inputs(bt_service *svc, bt_infer_request *req, bt_job *job, bt_http_response *resp)
{
    const bt_model *m = svc->model;
    if (req->n_inputs > m->n_inputs || m->n_inputs > BT_BATCH_MAX_INPUTS) {
        bt_response_errorf(resp, 400, "the model takes %zu inputs, the request has %zu",
                           m->n_inputs, req->n_inputs);
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
            bt_response_errorf(resp, 400, "unknown input '%.64s': the model's inputs are %s",
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
            bt_response_errorf(resp, 400, "missing input '%.64s': the model's inputs are %s",
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
    bt_response_errorf(resp, 415, "unsupported Content-Type '%.100s': expected application/json%s",
                       ct, binary ? " or application/octet-stream" : "");
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
            bt_response_errorf(
                resp, 413,
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
        bt_response_errorf(
            resp, 413,
            "the response would take about %.0f bytes, over this server's limit of %zu "
            "(--max-response-mb): send fewer rows",
            total, svc->max_response_bytes);
        return -1;
    }
    return 0;
}

/* The body as the codec takes it: Inference-Header-Content-Length read (v2), the
 * Content-Type checked, a gzip/deflate body inflated into *inflated (the caller frees it).
 * -1 with resp set. */
static int decode_body(int ep, const bt_http_request *req, bt_http_response *resp,
                       long long *header_len, bt_buf *inflated, const char **body, size_t *body_len)
{
    *header_len = -1;
    if (ep == BT_EP_INFER && req->header_length) {
        char *end;
        errno = 0;
        *header_len = strtoll(req->header_length, &end, 10);
        if (errno || end == req->header_length || *end || *header_len < 0) {
            bt_response_errorf(resp, 400,
                               "Inference-Header-Content-Length must be a non-negative integer, "
                               "got '%.40s'",
                               req->header_length);
            return -1;
        }
    }
    if (check_content_type(req, *header_len >= 0, resp) != 0)
        return -1;
    bt_error err = {BT_OK, ""};
    bt_coding coding;
    if (bt_coding_parse(req->content_encoding, &coding, &err) != 0) {
        bt_response_error(resp, 415, err.message);
        return -1;
    }
    *body = req->body ? req->body : "";
    *body_len = req->body_len;
    if (coding != BT_CODING_IDENTITY) {
        if (bt_inflate(coding, *body, *body_len,
                       req->max_body ? req->max_body : BT_DEFAULT_MAX_BODY, inflated, &err) != 0) {
            bt_response_from_error(resp, &err);
            return -1;
        }
        *body = inflated->data ? inflated->data : "";
        *body_len = inflated->len;
    }
    return 0;
}

/* Parses the body for its protocol: v2 (JSON, or JSON and binary tensors), or KServe v1
 * with the model's inputs as hints. -1 with resp set. */
static int parse_body(bt_service *svc, int ep, const char *body, size_t body_len,
                      long long header_len, bt_infer_request **parsed, bt_http_response *resp)
{
    bt_error err = {BT_OK, ""};
    int rc;
    if (ep == BT_EP_INFER) {
        rc = bt_codec_parse_v2(body, body_len, header_len, parsed, &err);
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
        rc = bt_codec_parse_v1(body, body_len, hints, nh, parsed, &err);
    }
    if (rc != 0)
        bt_response_from_error(resp, &err);
    return rc;
}

/* The outputs a request names: known to the signature (when it lists them) and each named
 * once. -1 with resp set. */
static int check_requested_outputs(bt_service *svc, const bt_infer_request *parsed,
                                   bt_http_response *resp)
{
    const bt_model *m = svc->model;
    for (size_t o = 0; m->n_outputs > 0 && o < parsed->n_outputs; o++) {
        size_t k = 0;
        char scratch[32];
        while (k < m->n_outputs &&
               strcmp(output_name(m, k, scratch, sizeof scratch), parsed->outputs[o].name) != 0)
            k++;
        if (k == m->n_outputs) {
            bt_response_errorf(resp, 400,
                               "unknown output '%.64s': the model's outputs are listed "
                               "at GET /v2/models/%s",
                               parsed->outputs[o].name, svc->name);
            return -1;
        }
    }
    for (size_t o = 0; o < parsed->n_outputs; o++) {
        for (size_t q = 0; q < o; q++) {
            if (strcmp(parsed->outputs[q].name, parsed->outputs[o].name) == 0) {
                bt_response_errorf(resp, 400,
                                   "output '%.64s' is requested twice: name each output once",
                                   parsed->outputs[o].name);
                return -1;
            }
        }
    }
    return 0;
}

int bt_service_begin(bt_service *svc, int ep, const bt_http_request *req, bt_http_response *resp,
                     bt_job **job_out)
{
    *job_out = NULL;
    bt_response_init(resp);
    double start = req->received > 0 ? req->received : bt_now();
    atomic_fetch_add(&svc->pending, 1);
    switch (ep) {
    case BT_EP_MODEL_READY:
        if (bt_service_ready(svc)) {
            bt_buf_puts(&resp->body, "{\"ready\":true}");
        } else {
            resp->status = 503; /* the probes' answer; the body says why */
            bt_buf_puts(&resp->body, "{\"ready\":false,\"error\":");
            bt_buf_json_string(&resp->body, bt_service_ready_reason(svc));
            bt_buf_puts(&resp->body, "}");
        }
        return finish_sync(svc, ep, start, req, resp);
    case BT_EP_MODEL_CONFIG:
        model_config(svc, &resp->body);
        return finish_sync(svc, ep, start, req, resp);
    case BT_EP_STATS:
        bt_buf_puts(&resp->body, "{\"model_stats\":[");
        bt_service_stats_json(svc, &resp->body);
        bt_buf_puts(&resp->body, "]}");
        return finish_sync(svc, ep, start, req, resp);
    case BT_EP_MODEL_META:
        model_metadata(svc, &resp->body);
        return finish_sync(svc, ep, start, req, resp);
    case BT_EP_V1_META:
        bt_buf_puts(&resp->body, "{\"name\":");
        bt_buf_json_string(&resp->body, svc->name);
        bt_buf_printf(&resp->body, ",\"ready\":%s}", bt_service_ready(svc) ? "true" : "false");
        return finish_sync(svc, ep, start, req, resp);
    case BT_EP_INFER:
    case BT_EP_V1_PREDICT:
        break;
    default:
        bt_response_errorf(resp, 404, "no such endpoint: %.16s %.200s", req->method, req->path);
        return finish_sync(svc, BT_EP_OTHER, start, req, resp);
    }

    /* BT_EP_INFER or BT_EP_V1_PREDICT */
    if (atomic_load(&svc->state) == STATE_STOPPING) {
        bt_response_error(resp, 503, "the server is shutting down");
        resp->retry_after = 1;
        return finish_sync(svc, ep, start, req, resp);
    }
    if (svc->timeout_ms > 0 && bt_now() > start + svc->timeout_ms / 1000.0) {
        /* It waited for the parse thread past its deadline: no parse, no forward. */
        bt_response_errorf(resp, 503,
                           "the request did not finish within its deadline of %g ms "
                           "(--timeout-ms)",
                           svc->timeout_ms);
        resp->retry_after = 1;
        atomic_fetch_add(&svc->expired, 1);
        return finish_sync(svc, ep, start, req, resp);
    }
    long long header_len = -1;
    bt_buf inflated = {0}; /* the body when it came compressed; freed after parsing */
    const char *body;
    size_t body_len;
    if (decode_body(ep, req, resp, &header_len, &inflated, &body, &body_len) != 0)
        return finish_failed(svc, ep, start, req, resp);
    bt_infer_request *parsed = NULL;
    bt_batcher_announce(svc->batcher); /* withdrawn by finish_withdrawn on every failure */
    int rc = parse_body(svc, ep, body, body_len, header_len, &parsed, resp);
    bt_buf_free(&inflated);
    if (rc != 0)
        return finish_withdrawn(svc, ep, start, req, resp);
    bt_job *job = calloc(1, sizeof *job);
    if (!job) {
        bt_infer_request_free(parsed);
        bt_response_error(resp, 500, "out of memory");
        return finish_withdrawn(svc, ep, start, req, resp);
    }
    job->svc = svc;
    job->endpoint = ep;
    job->start = start;
    job->binary_all = parsed->binary_data_output;
    if (bind_inputs(svc, parsed, job, resp) != 0 || check_bounds(svc, job, resp) != 0 ||
        check_requested_outputs(svc, parsed, resp) != 0) {
        bt_infer_request_free(parsed);
        job_free(job);
        return finish_withdrawn(svc, ep, start, req, resp);
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
                bt_response_errorf(resp, 400,
                                   "unknown output '%.64s': the model returned %zu outputs "
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
        bytes +=
            response_bytes((double)bt_numel(outs[i].tensor), outs[i].tensor->dtype, outs[i].binary);
    if (bytes > (double)svc->max_response_bytes) {
        bt_response_errorf(
            resp, 413,
            "the response would take about %.0f bytes, over this server's limit of %zu "
            "(--max-response-mb): send fewer rows",
            bytes, svc->max_response_bytes);
        return;
    }
    int rc;
    if (job->endpoint == BT_EP_INFER) {
        size_t json_len = 0;
        int any_binary = 0;
        for (size_t i = 0; i < n; i++)
            any_binary |= outs[i].binary;
        rc = bt_codec_encode_v2(&resp->body, svc->name, svc->version, job->id, outs, n, &json_len,
                                &err);
        if (rc == 0 && any_binary) {
            resp->content_type = "application/octet-stream";
            resp->header_length = (long long)json_len;
        }
    } else {
        rc = bt_codec_encode_v1(&resp->body, outs, n, &err);
    }
    if (rc != 0)
        bt_response_from_error(resp, &err);
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
        bt_response_error(resp, 500, "out of memory encoding the response");
    double t = bt_now() - job->start;
    bt_stats_request(bt_batcher_infer_stats(svc->batcher), resp->status < 400, t);
    bt_traffic_record(&svc->traffic, job->endpoint, resp->status, t);
    if (job->log_line)
        bt_log_request(job->log_line, resp->status, t);
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
    bt_response_init(&resp);
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
        bt_response_error(&resp, 500,
                          "the model ran out of memory or failed on this request "
                          "(details in the server log)");
    } else {
        bt_response_from_error(&resp, err);
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
            bt_response_init(&resp);
            if (shutdown)
                bt_response_error(&resp, 503,
                                  "the server is shutting down: the request did not finish "
                                  "within the grace period");
            else
                bt_response_errorf(&resp, 503,
                                   "the request did not finish within its deadline of "
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
            bt_deadline_in(&ts, next - now + 0.0005);
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
    if (bt_batcher_submit_announced(svc->batcher, job->in, n, timeout_ms, 1, job_done, job, &err) !=
        0)
        job_done(job, -1, NULL, 0, 0, &err);
}

const bt_metric_family BT_SERVICE_METRICS[BT_MF_COUNT] = {
    {"berth_requests_total", "counter", "HTTP requests by endpoint and status code."},
    {"berth_request_duration_seconds", "histogram", "Time from request to response, by endpoint."},
    {"berth_inflight_requests", "gauge", "Requests received and not yet answered."},
    {"berth_queue_seconds", "histogram", "Time requests waited in the batcher's queue."},
    {"berth_compute_seconds", "histogram", "Time per forward (one batch)."},
    {"berth_batch_size", "histogram", "Rows per forward."},
    {"berth_batcher_queued", "gauge", "Requests waiting in the batcher's queue."},
    {"berth_batcher_overloaded_total", "counter", "Requests refused: queue full."},
    {"berth_batcher_timeouts_total", "counter", "Requests that timed out in the queue."},
    {"berth_batch_retries_total", "counter",
     "Batched forwards that failed and were rerun one request at a time, so that each "
     "request got its own answer."},
    {"berth_expired_total", "counter",
     "Requests answered 503 by the deadline timer (--timeout-ms) or at the end of the "
     "shutdown grace period."},
    {"berth_model_load_seconds", "gauge", "Time spent loading the model."},
    {"berth_model_warmup_seconds", "gauge", "Time spent warming the model up."},
    {"berth_model_ready", "gauge", "Whether the model version is ready (1) or not (0)."},
    {"berth_batch_limit", "gauge",
     "Rows per forward in effect (max_batch_size, or less when warm-up measured bigger "
     "batches as dearer per row)."},
};

static void sample(bt_buf *out, const char *name, const char *labels, double value)
{
    if (labels[0])
        bt_buf_printf(out, "%s{%s} %.17g\n", name, labels, value);
    else
        bt_buf_printf(out, "%s %.17g\n", name, value);
}

void bt_service_metric(bt_service *svc, int family, const char *labels, bt_buf *out)
{
    const char *name = BT_SERVICE_METRICS[family].name;
    bt_batcher *b = svc->batcher;
    bt_batcher_stats st;
    int first = 0;
    switch (family) {
    case BT_MF_REQUESTS:
        bt_traffic_render_counts(&svc->traffic, labels, out);
        return;
    case BT_MF_DURATION:
        bt_traffic_render_latency(&svc->traffic, labels, &first, out);
        return;
    case BT_MF_INFLIGHT:
        sample(out, name, labels, (double)atomic_load(&svc->pending));
        return;
    case BT_MF_QUEUE_SECONDS:
        bt_histogram_render(out, bt_batcher_queue_seconds(b), name, NULL, labels);
        return;
    case BT_MF_COMPUTE_SECONDS:
        bt_histogram_render(out, bt_batcher_compute_seconds(b), name, NULL, labels);
        return;
    case BT_MF_BATCH_SIZE:
        bt_histogram_render(out, bt_batcher_batch_sizes(b), name, NULL, labels);
        return;
    case BT_MF_QUEUED:
    case BT_MF_OVERLOADED:
    case BT_MF_TIMEOUTS:
    case BT_MF_RETRIES:
        bt_batcher_get_stats(b, &st);
        sample(out, name, labels,
               (double)(family == BT_MF_QUEUED       ? st.queued
                        : family == BT_MF_OVERLOADED ? st.overloaded
                        : family == BT_MF_TIMEOUTS   ? st.timeouts
                                                     : st.retries));
        return;
    case BT_MF_EXPIRED:
        sample(out, name, labels, (double)atomic_load(&svc->expired));
        return;
    case BT_MF_LOAD_SECONDS:
        sample(out, name, labels, svc->model->load_seconds);
        return;
    case BT_MF_WARMUP_SECONDS: {
        sample(out, name, labels, bt_bits_double(atomic_load(&svc->warmup_bits)));
        return;
    }
    case BT_MF_MODEL_READY:
        sample(out, name, labels, bt_service_ready(svc));
        return;
    case BT_MF_BATCH_LIMIT:
        sample(out, name, labels,
               bt_service_batching(svc) ? bt_batcher_batch_limit(svc->batcher) : 1);
        return;
    default:
        return;
    }
}

void bt_service_stats_json(bt_service *svc, bt_buf *out)
{
    bt_stats_json(out, bt_batcher_infer_stats(svc->batcher), svc->name, svc->version);
}
