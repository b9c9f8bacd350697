/* stats.c - atomic per-model inference statistics (serving/metrics.c writes them as JSON). */
#define _POSIX_C_SOURCE 200809L
#include "runtime/stats.h"

#include <string.h>
#include <time.h>

static uint64_t to_ns(double seconds) { return seconds > 0 ? (uint64_t)(seconds * 1e9) : 0; }

static void duration_reset(bt_duration_stat *d)
{
    atomic_store_explicit(&d->count, 0, memory_order_relaxed);
    atomic_store_explicit(&d->ns, 0, memory_order_relaxed);
}

void bt_stats_reset(bt_infer_stats *s)
{
    bt_duration_stat *all[] = {&s->success,       &s->fail,          &s->queue,
                               &s->compute_input, &s->compute_infer, &s->compute_output};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        duration_reset(all[i]);
    atomic_store(&s->inference_count, 0);
    atomic_store(&s->execution_count, 0);
    atomic_store(&s->last_inference_ms, 0);
    for (size_t i = 0; i < BT_STATS_BATCH_SIZES; i++) {
        bt_batch_stat *b = &s->batches[i];
        duration_reset(&b->compute_input);
        duration_reset(&b->compute_infer);
        duration_reset(&b->compute_output);
        atomic_store(&b->rows, 0);
    }
}

void bt_duration_add(bt_duration_stat *d, double seconds, unsigned count)
{
    if (count)
        atomic_fetch_add_explicit(&d->count, count, memory_order_relaxed);
    atomic_fetch_add_explicit(&d->ns, to_ns(seconds), memory_order_relaxed);
}

/* The slot of batch size rows: found, or claimed; NULL when every slot is taken. */
static bt_batch_stat *batch_slot(bt_infer_stats *s, int64_t rows)
{
    size_t start = (size_t)rows % BT_STATS_BATCH_SIZES;
    for (size_t k = 0; k < BT_STATS_BATCH_SIZES; k++) {
        bt_batch_stat *b = &s->batches[(start + k) % BT_STATS_BATCH_SIZES];
        int64_t have = atomic_load(&b->rows);
        if (have == rows)
            return b;
        if (have == 0) {
            int64_t expect = 0;
            if (atomic_compare_exchange_strong(&b->rows, &expect, rows) || expect == rows)
                return b;
        }
    }
    return NULL;
}

void bt_stats_execution(bt_infer_stats *s, int64_t rows, size_t n_requests, double input_s,
                        double infer_s, double output_s)
{
    atomic_fetch_add_explicit(&s->execution_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->inference_count, rows > 0 ? (uint64_t)rows : 0,
                              memory_order_relaxed);
    /* Triton's per-request compute times: each request of a batch took the batch's. */
    for (size_t i = 0; i < n_requests; i++) {
        bt_duration_add(&s->compute_input, input_s, 1);
        bt_duration_add(&s->compute_infer, infer_s, 1);
        bt_duration_add(&s->compute_output, output_s, 1);
    }
    bt_batch_stat *b = rows > 0 ? batch_slot(s, rows) : NULL;
    if (b) {
        bt_duration_add(&b->compute_input, input_s, 1);
        bt_duration_add(&b->compute_infer, infer_s, 1);
        bt_duration_add(&b->compute_output, output_s, 1);
    }
}

void bt_stats_request(bt_infer_stats *s, int ok, double seconds)
{
    bt_duration_add(ok ? &s->success : &s->fail, seconds, 1);
    if (ok) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        atomic_store(&s->last_inference_ms,
                     (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    }
}
