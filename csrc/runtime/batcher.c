/* batcher.c - the dynamic batcher: one queue, worker threads (one by default), pthreads. */
#define _POSIX_C_SOURCE 200809L
#include "runtime/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/tensor.h"

/* Seconds without a new request after which a forming batch runs before max_delay_ms. */
#define BT_BATCH_IDLE_GAP 0.0002

typedef struct bt_item {
    struct bt_item *next;
    DLManagedTensor *in[BT_BATCH_MAX_INPUTS];
    size_t n_in;
    int64_t rows;    /* leading extent (batching only) */
    double enqueued; /* bt_now() at submit */
    double deadline; /* 0: none */
    bt_batch_done_fn done;
    void *ctx;
} bt_item;

struct bt_worker {
    struct bt_batcher *b;
    pthread_t thread;
    bt_item **batch; /* max_batch_size slots, this worker's own */
};

struct bt_batcher {
    bt_model *model;
    bt_batcher_params params;
    int batching;
    _Atomic int limit;             /* rows per forward in effect: max_batch_size, or the tuner's */
    _Atomic uint64_t forward_bits; /* moving average of a forward's seconds, as double bits */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bt_item *head, *tail;
    size_t queued;
    int64_t queued_rows;
    double last_arrival;  /* bt_now() of the latest submit */
    _Atomic int upstream; /* requests announced (being parsed) and not yet submitted */
    int stopping;
    int n_workers;
    struct bt_worker *workers; /* n_workers entries */

    _Atomic uint64_t requests, batches, rows, errors, overloaded, timeouts, retries;
    bt_histogram batch_sizes, queue_seconds, compute_seconds;
    bt_infer_stats stats; /* the statistics extension's; reset when warm-up ends */

    pthread_mutex_t tune_mu;
    bt_tuner tuner;       /* under tune_mu */
    _Atomic int climbing; /* 1 while the tuner times sizes: forwards are counted */
    char tune_label[128]; /* names the model in the line logged when a climb ends */
};

bt_batcher_params bt_batcher_default_params(void)
{
    bt_batcher_params p = {64, 2.0, 1024, -1, 1};
    return p;
}

int bt_batcher_is_batching(const bt_batcher *b) { return b->batching; }
int bt_batcher_batch_limit(const bt_batcher *b) { return atomic_load(&b->limit); }

void bt_batcher_tune(bt_batcher *b, const char *label)
{
    pthread_mutex_lock(&b->tune_mu);
    bt_tuner_start(&b->tuner, b->params.max_batch_size);
    snprintf(b->tune_label, sizeof b->tune_label, "%s", label ? label : "");
    atomic_store(&b->limit, b->tuner.limit);
    atomic_store(&b->climbing, 1);
    pthread_mutex_unlock(&b->tune_mu);
}

int bt_batcher_tuning_rows(bt_batcher *b)
{
    if (!atomic_load(&b->climbing))
        return 0;
    pthread_mutex_lock(&b->tune_mu);
    int rows = b->tuner.measuring;
    pthread_mutex_unlock(&b->tune_mu);
    return rows;
}

int bt_batcher_tuning_forwards_left(bt_batcher *b)
{
    if (!atomic_load(&b->climbing))
        return 0;
    pthread_mutex_lock(&b->tune_mu);
    int forwards = bt_tuner_forwards_left(&b->tuner);
    pthread_mutex_unlock(&b->tune_mu);
    return forwards;
}

size_t bt_batcher_tuning(bt_batcher *b, bt_batch_cost *costs, size_t cap, int *done, char *text,
                         size_t text_cap)
{
    pthread_mutex_lock(&b->tune_mu);
    size_t n = b->tuner.n_steps < cap ? b->tuner.n_steps : cap;
    memcpy(costs, b->tuner.steps, n * sizeof *costs);
    *done = bt_tuner_done(&b->tuner);
    if (text)
        bt_tuner_text(&b->tuner, text, text_cap);
    pthread_mutex_unlock(&b->tune_mu);
    return n;
}

/* Counts a successful forward towards a climb in progress; logs the limit the climb chose
 * when it ends. */
static void observe_tuning(bt_batcher *b, int64_t rows, double seconds)
{
    if (!atomic_load(&b->climbing))
        return;
    char text[512];
    int ended = 0;
    pthread_mutex_lock(&b->tune_mu);
    if (bt_tuner_observe(&b->tuner, rows, seconds)) {
        atomic_store(&b->limit, b->tuner.limit);
        ended = bt_tuner_done(&b->tuner);
        if (ended) {
            atomic_store(&b->climbing, 0);
            bt_tuner_text(&b->tuner, text, sizeof text);
        }
    }
    pthread_mutex_unlock(&b->tune_mu);
    if (ended && b->tune_label[0])
        fprintf(stderr, "berth: %s: %s\n", b->tune_label, text);
}

const bt_histogram *bt_batcher_batch_sizes(const bt_batcher *b) { return &b->batch_sizes; }
const bt_histogram *bt_batcher_queue_seconds(const bt_batcher *b) { return &b->queue_seconds; }
const bt_histogram *bt_batcher_compute_seconds(const bt_batcher *b) { return &b->compute_seconds; }
bt_infer_stats *bt_batcher_infer_stats(bt_batcher *b) { return &b->stats; }

static void release_all(DLManagedTensor **t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i] && t[i]->deleter)
            t[i]->deleter(t[i]);
        t[i] = NULL;
    }
}

static void fail_item(bt_item *it, const bt_error *err)
{
    release_all(it->in, it->n_in);
    it->done(it->ctx, -1, NULL, 0, 0, err);
    free(it);
}

/* Same input count, dtypes and trailing extents: rows can be stacked. */
static int compatible(const bt_item *a, const bt_item *b)
{
    if (a->n_in != b->n_in)
        return 0;
    for (size_t i = 0; i < a->n_in; i++) {
        const DLTensor *x = &a->in[i]->dl_tensor, *y = &b->in[i]->dl_tensor;
        if (x->ndim != y->ndim || !bt_dtype_equal(x->dtype, y->dtype))
            return 0;
        for (int d = 1; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d])
                return 0;
    }
    return 1;
}

/* Moves up to the batch limit's rows of items compatible with the head into *batch
 * (mutex held). Returns the number of items taken. */
static size_t take_batch(bt_batcher *b, bt_item **batch, size_t cap, int64_t *total_rows)
{
    const int64_t limit = atomic_load(&b->limit);
    size_t n = 0;
    int64_t rows = 0;
    bt_item *first = b->head;
    bt_item **link = &b->head;
    bt_item *prev = NULL;
    while (*link && n < cap) {
        bt_item *it = *link;
        int take = n == 0 || (b->batching && compatible(first, it) && rows + it->rows <= limit);
        if (!take) {
            if (!b->batching)
                break;
            prev = it;
            link = &it->next;
            continue;
        }
        *link = it->next;
        if (b->tail == it)
            b->tail = prev;
        it->next = NULL;
        batch[n++] = it;
        rows += it->rows;
        b->queued--;
        b->queued_rows -= it->rows;
        if (rows >= limit)
            break;
    }
    *total_rows = rows;
    return n;
}

/* Rows [start, start+rows) of t as a new contiguous tensor. */
static DLManagedTensor *slice_rows(const DLTensor *t, int64_t start, int64_t rows, bt_error *err)
{
    int64_t shape[BT_MAX_NDIM];
    int nd = t->ndim < BT_MAX_NDIM ? t->ndim : BT_MAX_NDIM;
    memcpy(shape, t->shape, (size_t)nd * sizeof(int64_t));
    shape[0] = rows;
    DLManagedTensor *out = bt_tensor_new(t->dtype, nd, shape, err);
    if (!out)
        return NULL;
    int64_t row_elems = 1;
    for (int d = 1; d < nd; d++)
        row_elems *= shape[d];
    size_t row_bytes = (size_t)row_elems * bt_dtype_size(t->dtype);
    if (rows > 0 && row_bytes > 0)
        memcpy(out->dl_tensor.data,
               (const char *)t->data + t->byte_offset + (size_t)start * row_bytes,
               (size_t)rows * row_bytes);
    return out;
}

/* The moving average of a forward's wall time (0 before the first). */
static double typical_forward(bt_batcher *b)
{
    return bt_bits_double(atomic_load(&b->forward_bits));
}

static void note_forward(bt_batcher *b, double seconds)
{
    double avg = typical_forward(b);
    avg = avg > 0 ? 0.8 * avg + 0.2 * seconds : seconds;
    atomic_store(&b->forward_bits, bt_double_bits(avg));
}

/* Counts one forward of `rows` rows that took `seconds`, failed or not. */
static void note_execution(bt_batcher *b, double seconds, int64_t rows)
{
    note_forward(b, seconds);
    bt_histogram_observe(&b->compute_seconds, seconds);
    bt_histogram_observe(&b->batch_sizes, (double)rows);
    atomic_fetch_add(&b->batches, 1);
    atomic_fetch_add(&b->rows, (uint64_t)rows);
}

/* Runs one item alone and completes it. */
static void run_one(bt_batcher *b, bt_item *it, double start)
{
    bt_error err = {BT_OK, ""};
    DLManagedTensor *outs[BT_MAX_OUTPUTS];
    size_t n_out = 0;
    int is_tuple = 0;
    int rc =
        bt_model_forward(b->model, it->in, it->n_in, outs, BT_MAX_OUTPUTS, &n_out, &is_tuple, &err);
    memset(it->in, 0, sizeof it->in); /* forward owns them now */
    double t = bt_now() - start;
    int64_t rows = b->batching ? it->rows : 1;
    note_execution(b, t, rows);
    if (rc != 0) {
        atomic_fetch_add(&b->errors, 1);
        it->done(it->ctx, -1, NULL, 0, 0, &err);
    } else {
        bt_stats_execution(&b->stats, rows, 1, 0, t, 0);
        observe_tuning(b, rows, t);
        it->done(it->ctx, 0, outs, n_out, is_tuple, NULL);
    }
    free(it);
}

/* Stacks each input of the n items along the leading dimension into stacked[] (owned by
 * the caller, who releases it on failure too). Each item keeps its own inputs. */
static int stack_inputs(bt_item **items, size_t n, int64_t total_rows, DLManagedTensor **stacked,
                        bt_error *err)
{
    for (size_t j = 0; j < items[0]->n_in; j++) {
        const DLTensor *proto = &items[0]->in[j]->dl_tensor;
        int64_t shape[BT_MAX_NDIM];
        memcpy(shape, proto->shape, (size_t)proto->ndim * sizeof(int64_t));
        shape[0] = total_rows;
        stacked[j] = bt_tensor_new(proto->dtype, proto->ndim, shape, err);
        if (!stacked[j])
            return -1;
        char *dst = stacked[j]->dl_tensor.data;
        for (size_t i = 0; i < n; i++) {
            const DLTensor *t = &items[i]->in[j]->dl_tensor;
            size_t bytes = (size_t)bt_numel(t) * bt_dtype_size(t->dtype);
            if (bytes)
                memcpy(dst, (const char *)t->data + t->byte_offset, bytes);
            dst += bytes;
        }
    }
    return 0;
}

/* Outputs of a batched forward must carry the batch in their leading dimension; a
 * non-contiguous one is replaced by a contiguous copy, so rows can be sliced. */
static int check_batched_outputs(DLManagedTensor **outs, size_t n_out, int64_t total_rows,
                                 bt_error *err)
{
    for (size_t k = 0; k < n_out; k++) {
        const DLTensor *o = &outs[k]->dl_tensor;
        if (o->ndim < 1 || o->shape[0] != total_rows || o->ndim > BT_MAX_NDIM) {
            char got[256];
            return bt_error_set(err, BT_ERR_MODEL,
                                "the model is served with batching but output %zu has shape "
                                "%s, not a leading batch dimension of %lld rows; serve it "
                                "without batching",
                                k, bt_shape_str(got, sizeof got, o->shape, o->ndim),
                                (long long)total_rows);
        }
        if (!bt_is_contiguous(o)) {
            DLManagedTensor *c = bt_tensor_cast(o, o->dtype, err);
            if (!c)
                return -1;
            outs[k]->deleter(outs[k]);
            outs[k] = c;
        }
    }
    return 0;
}

/* Hands each item its rows of the batch's outputs (copies: outs stays the caller's),
 * completes and frees it. Returns the seconds spent slicing, not in the callbacks. */
static double split_outputs(bt_batcher *b, bt_item **items, size_t n, DLManagedTensor **outs,
                            size_t n_out, int is_tuple)
{
    double output_s = 0;
    int64_t row = 0;
    for (size_t i = 0; i < n; i++) {
        bt_error err = {BT_OK, ""};
        DLManagedTensor *mine[BT_MAX_OUTPUTS];
        int ok = 1;
        double split_start = bt_now();
        for (size_t k = 0; k < n_out; k++) {
            mine[k] = slice_rows(&outs[k]->dl_tensor, row, items[i]->rows, &err);
            if (!mine[k]) {
                release_all(mine, k);
                ok = 0;
                break;
            }
        }
        output_s += bt_now() - split_start;
        if (ok) {
            items[i]->done(items[i]->ctx, 0, mine, n_out, is_tuple, NULL);
        } else {
            atomic_fetch_add(&b->errors, 1);
            items[i]->done(items[i]->ctx, -1, NULL, 0, 0, &err);
        }
        row += items[i]->rows;
        free(items[i]);
    }
    return output_s;
}

/* Runs one batch outside the lock and completes every item in it. When the batched
 * forward fails (one request's rows can make the model raise), each request is run
 * alone so that it gets its own answer, not another client's error. */
static void run_batch(bt_batcher *b, bt_item **items, size_t n, int64_t total_rows)
{
    double start = bt_now();
    for (size_t i = 0; i < n; i++) {
        bt_histogram_observe(&b->queue_seconds, start - items[i]->enqueued);
        bt_duration_add(&b->stats.queue, start - items[i]->enqueued, 1);
    }
    if (n == 1) {
        run_one(b, items[0], start);
        return;
    }

    bt_error err = {BT_OK, ""};
    DLManagedTensor *stacked[BT_BATCH_MAX_INPUTS] = {0};
    DLManagedTensor *outs[BT_MAX_OUTPUTS];
    size_t n_in = items[0]->n_in, n_out = 0;
    int is_tuple = 0, forwarded = 0;
    int rc = stack_inputs(items, n, total_rows, stacked, &err);
    double stacked_at = bt_now();
    if (rc == 0) {
        rc = bt_model_forward(b->model, stacked, n_in, outs, BT_MAX_OUTPUTS, &n_out, &is_tuple,
                              &err); /* takes the stacked inputs, whatever it returns */
        forwarded = 1;
    } else {
        release_all(stacked, n_in);
    }
    double forward_done = bt_now();
    note_execution(b, forward_done - start, total_rows);
    if (forwarded && rc != 0) {
        atomic_fetch_add(&b->retries, 1);
        fprintf(stderr, "berth: a batch of %zu requests failed (%.200s); running each alone\n", n,
                err.message);
        for (size_t i = 0; i < n; i++)
            run_one(b, items[i], bt_now());
        return;
    }
    for (size_t i = 0; i < n; i++)
        release_all(items[i]->in, items[i]->n_in);
    if (rc == 0)
        rc = check_batched_outputs(outs, n_out, total_rows, &err);
    if (rc != 0) {
        release_all(outs, n_out);
        atomic_fetch_add(&b->errors, n);
        for (size_t i = 0; i < n; i++)
            fail_item(items[i], &err);
        return;
    }
    /* Output time: the checks above and each request's split, not its callback. */
    double output_s = bt_now() - forward_done;
    output_s += split_outputs(b, items, n, outs, n_out, is_tuple);
    release_all(outs, n_out);
    bt_stats_execution(&b->stats, total_rows, n, stacked_at - start, forward_done - stacked_at,
                       output_s);
    observe_tuning(b, total_rows, forward_done - start);
}

static void *worker_main(void *arg)
{
    struct bt_worker *w = arg;
    bt_batcher *b = w->b;
    bt_item **batch = w->batch;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stopping)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head)
            break; /* stopping and drained */
        if (b->batching && b->params.max_delay_ms > 0) {
            /* Wait for more rows while they are known to be coming (announced) or keep
             * arriving: until the batch is full, the oldest request has waited
             * max_delay_ms, or no request arrived for BT_BATCH_IDLE_GAP. A lone client
             * is not held at all. */
            /* Never longer than a typical forward, though: rows that arrive while the
             * next forward runs are batched after it anyway, so a longer wait only idles
             * the model (the MLP's 20 us forwards ran at a third of their throughput at
             * 2-8 connections when each batch waited out 2 ms). */
            double delay = b->params.max_delay_ms / 1000.0;
            double typical = typical_forward(b);
            if (typical > 0 && typical < delay)
                delay = typical;
            double deadline = b->head->enqueued + delay;
            while (b->head && !b->stopping && b->queued_rows < atomic_load(&b->limit)) {
                int coming = atomic_load(&b->upstream) > 0;
                if (!coming && b->queued < 2)
                    break; /* a lone request with nothing else in sight runs at once */
                double now = bt_now();
                double wake = b->last_arrival + BT_BATCH_IDLE_GAP;
                if (coming || wake > deadline)
                    wake = deadline;
                if (now >= wake)
                    break;
                struct timespec ts;
                bt_deadline_in(&ts, wake - now);
                pthread_cond_timedwait(&b->cv, &b->mu, &ts);
            }
            if (!b->head)
                continue;
        }
        int64_t rows = 0;
        size_t n = take_batch(b, batch, (size_t)b->params.max_batch_size, &rows);
        pthread_mutex_unlock(&b->mu);

        /* Requests whose queue timeout passed fail without running. */
        double now = bt_now();
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (batch[i]->deadline > 0 && now > batch[i]->deadline) {
                bt_error err;
                bt_error_set(&err, BT_ERR_TIMEOUT,
                             "the request waited %.1f ms in the queue, longer than its timeout",
                             (now - batch[i]->enqueued) * 1000.0);
                atomic_fetch_add(&b->timeouts, 1);
                rows -= batch[i]->rows;
                fail_item(batch[i], &err);
            } else {
                batch[kept++] = batch[i];
            }
        }
        if (kept)
            run_batch(b, batch, kept, rows);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int bt_batcher_create(bt_model *model, const bt_batcher_params *params, bt_batcher **out,
                      bt_error *err)
{
    *out = NULL;
    bt_batcher_params p = params ? *params : bt_batcher_default_params();
    if (p.max_batch_size < 1 || p.max_batch_size > BT_BATCH_MAX_SIZE)
        return bt_error_set(err, BT_ERR_VALUE, "max_batch_size must be between 1 and %d, got %d",
                            BT_BATCH_MAX_SIZE, p.max_batch_size);
    if (!(p.max_delay_ms >= 0 && p.max_delay_ms <= BT_BATCH_MAX_DELAY_MS))
        return bt_error_set(err, BT_ERR_VALUE, "max_delay_ms must be between 0 and %g, got %g",
                            BT_BATCH_MAX_DELAY_MS, p.max_delay_ms);
    if (p.max_queue < 1)
        return bt_error_set(err, BT_ERR_VALUE, "max_queue must be at least 1, got %d", p.max_queue);
    /* a .pt2 admits batches only up to the range its batch dimension was exported for */
    if (model->max_batch < p.max_batch_size)
        p.max_batch_size = (int)model->max_batch;
    if (p.max_queue > BT_BATCH_MAX_QUEUE)
        return bt_error_set(err, BT_ERR_VALUE, "max_queue must be at most %d, got %d",
                            BT_BATCH_MAX_QUEUE, p.max_queue);
    if (model->n_inputs > BT_BATCH_MAX_INPUTS)
        return bt_error_set(err, BT_ERR_VALUE,
                            "the batcher handles models of at most %d inputs; this one takes %zu",
                            BT_BATCH_MAX_INPUTS, model->n_inputs);
    if (p.workers < 1 || p.workers > BT_BATCH_MAX_WORKERS)
        return bt_error_set(err, BT_ERR_VALUE, "workers must be between 1 and %d, got %d",
                            BT_BATCH_MAX_WORKERS, p.workers);
    bt_batcher *b = calloc(1, sizeof *b);
    struct bt_worker *workers = calloc((size_t)p.workers, sizeof *workers);
    if (!b || !workers) {
        free(b);
        free(workers);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    b->workers = workers;
    for (int i = 0; i < p.workers; i++) {
        workers[i].b = b;
        workers[i].batch = malloc(sizeof(bt_item *) * (size_t)p.max_batch_size);
        if (!workers[i].batch) {
            for (int k = 0; k < i; k++)
                free(workers[k].batch);
            free(workers);
            free(b);
            return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
        }
    }
    b->model = model;
    b->params = p;
    atomic_store(&b->limit, p.max_batch_size);
    b->batching = p.batching < 0 ? model->batchable : p.batching;
    bt_histogram_init(&b->batch_sizes, BT_BATCH_BOUNDS, BT_BATCH_N);
    bt_histogram_init(&b->queue_seconds, BT_SECONDS_BOUNDS, BT_SECONDS_N);
    bt_histogram_init(&b->compute_seconds, BT_SECONDS_BOUNDS, BT_SECONDS_N);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->tune_mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    for (int i = 0; i < p.workers; i++) {
        int e = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
        if (e != 0) {
            b->n_workers = i;
            bt_batcher_free(b);
            return bt_error_set(err, BT_ERR_INTERNAL, "cannot start a batcher thread: %s",
                                strerror(e));
        }
    }
    b->n_workers = p.workers;
    *out = b;
    return 0;
}

void bt_batcher_free(bt_batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    for (int i = 0; i < b->n_workers; i++)
        pthread_join(b->workers[i].thread, NULL);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    pthread_mutex_destroy(&b->tune_mu);
    for (int i = 0; i < b->params.workers; i++)
        free(b->workers[i].batch);
    free(b->workers);
    free(b);
}

void bt_batcher_cancel_queued(bt_batcher *b, const char *why)
{
    pthread_mutex_lock(&b->mu);
    bt_item *list = b->head;
    b->head = b->tail = NULL;
    b->queued = 0;
    b->queued_rows = 0;
    pthread_mutex_unlock(&b->mu);
    bt_error err;
    bt_error_set(&err, BT_ERR_OVERLOADED, "%s", why);
    while (list) {
        bt_item *next = list->next;
        fail_item(list, &err);
        list = next;
    }
}

/* Checks and prepares the inputs of one request; releases them on failure. */
static int prepare_inputs(bt_batcher *b, DLManagedTensor **in, size_t n, int64_t *rows,
                          bt_error *err)
{
    const bt_model *m = b->model;
    int rc = 0;
    if (n < m->n_required || n > m->n_inputs) {
        rc = bt_error_set(err, BT_ERR_VALUE, "the model takes %s%zu inputs (%zu required), got %zu",
                          m->n_required == m->n_inputs ? "" : "up to ", m->n_inputs, m->n_required,
                          n);
    }
    *rows = 1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        DLDataType to;
        const char *name = m->inputs[i].name;
        int c = bt_model_check_input(m, i, &in[i]->dl_tensor, &to, err);
        if (c < 0) {
            rc = -1;
            break;
        }
        if (c == 0 && !bt_is_contiguous(&in[i]->dl_tensor))
            to = in[i]->dl_tensor.dtype, c = 1;
        if (c == 1) {
            DLManagedTensor *cast = bt_tensor_cast(&in[i]->dl_tensor, to, err);
            if (!cast) {
                rc = -1;
                break;
            }
            in[i]->deleter(in[i]);
            in[i] = cast;
        }
        if (b->batching) {
            const DLTensor *t = &in[i]->dl_tensor;
            if (t->ndim < 1) {
                rc = bt_error_set(err, BT_ERR_VALUE,
                                  "input '%s' is a scalar, but the model is batched along the "
                                  "first dimension: send shape (n, ...)",
                                  name);
            } else if (i == 0) {
                *rows = t->shape[0];
            } else if (t->shape[0] != *rows) {
                rc =
                    bt_error_set(err, BT_ERR_VALUE,
                                 "input '%s' has %lld rows but input '%s' has %lld: inputs "
                                 "must share the batch dimension",
                                 name, (long long)t->shape[0], m->inputs[0].name, (long long)*rows);
            }
        }
    }
    if (rc != 0)
        release_all(in, n);
    return rc;
}

static int submit(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                  int announced, bt_batch_done_fn done, void *ctx, bt_error *err);

void bt_batcher_announce(bt_batcher *b) { atomic_fetch_add(&b->upstream, 1); }

void bt_batcher_withdraw(bt_batcher *b)
{
    if (atomic_fetch_sub(&b->upstream, 1) == 1) {
        pthread_mutex_lock(&b->mu);
        pthread_cond_signal(&b->cv); /* nothing more is coming: stop waiting for it */
        pthread_mutex_unlock(&b->mu);
    }
}

int bt_batcher_submit(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                      bt_batch_done_fn done, void *ctx, bt_error *err)
{
    return bt_batcher_submit_announced(b, inputs, n, timeout_ms, 0, done, ctx, err);
}

int bt_batcher_submit_announced(bt_batcher *b, DLManagedTensor **inputs, size_t n,
                                double timeout_ms, int announced, bt_batch_done_fn done, void *ctx,
                                bt_error *err)
{
    int rc = submit(b, inputs, n, timeout_ms, announced, done, ctx, err);
    if (rc != 0 && announced)
        bt_batcher_withdraw(b);
    return rc;
}

static int submit(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                  int announced, bt_batch_done_fn done, void *ctx, bt_error *err)
{
    if (n > BT_BATCH_MAX_INPUTS) {
        release_all(inputs, n);
        return bt_error_set(err, BT_ERR_VALUE, "too many inputs: %zu (the model takes %zu)", n,
                            b->model->n_inputs);
    }
    int64_t rows;
    if (prepare_inputs(b, inputs, n, &rows, err) != 0)
        return -1;
    bt_item *it = calloc(1, sizeof *it);
    if (!it) {
        release_all(inputs, n);
        return bt_error_set(err, BT_ERR_NO_MEMORY, "out of memory");
    }
    memcpy(it->in, inputs, n * sizeof *inputs);
    it->n_in = n;
    it->rows = rows;
    it->done = done;
    it->ctx = ctx;
    it->enqueued = bt_now();
    it->deadline = timeout_ms > 0 ? it->enqueued + timeout_ms / 1000.0 : 0;

    pthread_mutex_lock(&b->mu);
    if (b->stopping || b->queued >= (size_t)b->params.max_queue) {
        int stopping = b->stopping;
        size_t q = b->queued;
        pthread_mutex_unlock(&b->mu);
        atomic_fetch_add(&b->overloaded, 1);
        release_all(it->in, it->n_in);
        free(it);
        if (stopping)
            return bt_error_set(err, BT_ERR_OVERLOADED, "the batcher is shutting down");
        return bt_error_set(err, BT_ERR_OVERLOADED,
                            "the queue is full (%zu requests waiting, max_queue=%d): retry later",
                            q, b->params.max_queue);
    }
    int was_empty = b->head == NULL;
    if (b->tail)
        b->tail->next = it;
    else
        b->head = it;
    b->tail = it;
    b->queued++;
    b->queued_rows += b->batching ? rows : 1;
    b->last_arrival = it->enqueued;
    atomic_fetch_add(&b->requests, 1);
    int last_announced = announced && atomic_fetch_sub(&b->upstream, 1) == 1;
    /* The worker needs waking only to start a batch, when one is full, or when the last
     * announced request arrived; otherwise it wakes on its own deadline. */
    if (was_empty || last_announced || !b->batching || b->queued_rows >= atomic_load(&b->limit))
        pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return 0;
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int finished;
    int status;
    DLManagedTensor **outs;
    size_t max_out;
    size_t n_out;
    int is_tuple;
    bt_error *err;
} sync_wait;

static void sync_done(void *ctx, int status, DLManagedTensor **outputs, size_t n_outputs,
                      int is_tuple, const bt_error *err)
{
    sync_wait *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    if (status == 0) {
        size_t keep = n_outputs < w->max_out ? n_outputs : w->max_out;
        memcpy(w->outs, outputs, keep * sizeof *outputs);
        release_all(outputs + keep, n_outputs - keep);
        w->n_out = keep;
        w->is_tuple = is_tuple;
    } else {
        *w->err = *err;
    }
    w->finished = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int bt_batcher_run(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                   DLManagedTensor **outputs, size_t max_outputs, size_t *n_outputs, int *is_tuple,
                   bt_error *err)
{
    sync_wait w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.outs = outputs;
    w.max_out = max_outputs;
    w.err = err;
    int rc = bt_batcher_submit(b, inputs, n, timeout_ms, sync_done, &w, err);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.finished)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.status;
        *n_outputs = w.n_out;
        *is_tuple = w.is_tuple;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

void bt_batcher_get_stats(bt_batcher *b, bt_batcher_stats *out)
{
    out->requests = atomic_load(&b->requests);
    out->batches = atomic_load(&b->batches);
    out->rows = atomic_load(&b->rows);
    out->errors = atomic_load(&b->errors);
    out->overloaded = atomic_load(&b->overloaded);
    out->timeouts = atomic_load(&b->timeouts);
    out->retries = atomic_load(&b->retries);
    pthread_mutex_lock(&b->mu);
    out->queued = b->queued;
    pthread_mutex_unlock(&b->mu);
}
