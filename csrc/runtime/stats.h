/*
 * stats.h - the inference statistics of one model, in the shape of Triton's statistics
 * extension (GET /v2/models/{name}/stats): request counts and cumulative nanoseconds
 * for success, failure, queueing, input preparation, forward and output, and per batch
 * size the executions that ran. Every counter is an atomic, written from the batcher's
 * and the HTTP threads without a lock; a reader sees each counter whole, the set of
 * them as of about the same moment.
 */
#ifndef BERTH_STATS_H
#define BERTH_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Distinct batch sizes kept in batch_stats; executions of further sizes are counted in
 * the totals only. */
#define BT_STATS_BATCH_SIZES 128

typedef struct bt_duration_stat {
    _Atomic uint64_t count;
    _Atomic uint64_t ns;
} bt_duration_stat;

typedef struct bt_batch_stat {
    _Atomic int64_t rows; /* the batch size; 0: slot free */
    bt_duration_stat compute_input, compute_infer, compute_output;
} bt_batch_stat;

typedef struct bt_infer_stats {
    bt_duration_stat success;           /* requests answered 2xx, request to response */
    bt_duration_stat fail;              /* inference requests answered with an error */
    bt_duration_stat queue;             /* per request: time in the batcher's queue */
    bt_duration_stat compute_input;     /* per request: stacking its batch's inputs */
    bt_duration_stat compute_infer;     /* per request: its batch's forward */
    bt_duration_stat compute_output;    /* per request: splitting and encoding outputs */
    _Atomic uint64_t inference_count;   /* rows inferred */
    _Atomic uint64_t execution_count;   /* forwards run */
    _Atomic uint64_t last_inference_ms; /* ms since the Unix epoch of the latest success */
    bt_batch_stat batches[BT_STATS_BATCH_SIZES];
} bt_infer_stats;

/* Zeroes every counter (before a model takes traffic: warm-up is not counted). */
void bt_stats_reset(bt_infer_stats *s);

/* Adds one observation of seconds (count 1) or, with count 0, time only. */
void bt_duration_add(bt_duration_stat *d, double seconds, unsigned count);

/* One forward of `rows` rows for n_requests requests: the execution and batch stats,
 * and each request's share of queue-free compute time. */
void bt_stats_execution(bt_infer_stats *s, int64_t rows, size_t n_requests, double input_s,
                        double infer_s, double output_s);

/* A request answered: success (sets last_inference) or fail, with its total time. */
void bt_stats_request(bt_infer_stats *s, int ok, double seconds);

#endif /* BERTH_STATS_H */
