/*
 * batcher.h - dynamic batching in C: requests from any thread queue here, are
 * concatenated along the batch (leading) dimension up to max_batch_size rows or until
 * the oldest has waited max_delay_ms, run as one bt_model_forward, and split back.
 *
 * Only models whose batch dimension is known are batched (bt_model.batchable, from the
 * signature, or params.batching = 1); the others run one request per forward, in order.
 * A full queue fails at once (BT_ERR_OVERLOADED); a request may carry a queue timeout
 * (BT_ERR_TIMEOUT).
 */
#ifndef BERTH_BATCHER_H
#define BERTH_BATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "berth/dlpack.h"
#include "runtime/clock.h"
#include "runtime/error.h"
#include "runtime/histogram.h"
#include "runtime/model.h"
#include "runtime/stats.h"
#include "runtime/tuner.h"

#define BT_BATCH_MAX_INPUTS 16
/* Ranges of bt_batcher_params (bt_batcher_create refuses values outside them). */
#define BT_BATCH_MAX_SIZE     (1 << 20)
#define BT_BATCH_MAX_DELAY_MS 60000.0
#define BT_BATCH_MAX_QUEUE    (1 << 24)
#define BT_BATCH_MAX_WORKERS  64

typedef struct bt_batcher bt_batcher;

typedef struct bt_batcher_params {
    int max_batch_size;  /* rows per forward, >= 1 */
    double max_delay_ms; /* longest wait for more rows after the first, >= 0 */
    int max_queue;       /* queued requests before BT_ERR_OVERLOADED, >= 1 */
    int batching;        /* -1: the model's signature decides; 0: never; 1: always */
    int workers;         /* threads running forwards concurrently, 1..64 */
} bt_batcher_params;

/* {64, 2.0, 1024, -1, 1} */
bt_batcher_params bt_batcher_default_params(void);

/* Called once per submitted request, from the batcher's thread. On success (status 0)
 * the callee owns outputs[0..n_outputs). On failure err says why. */
typedef void (*bt_batch_done_fn)(void *ctx, int status, DLManagedTensor **outputs, size_t n_outputs,
                                 int is_tuple, const bt_error *err);

/* Starts the batcher's worker threads. model must outlive the batcher. */
int bt_batcher_create(bt_model *model, const bt_batcher_params *params, bt_batcher **out,
                      bt_error *err);

/* Stops taking requests, finishes every queued one, joins the threads. NULL-tolerant. */
void bt_batcher_free(bt_batcher *b);

/* Fails every queued request at once (BT_ERR_OVERLOADED, why) without running it; forwards
 * already running finish. For a shutdown past its grace period. */
void bt_batcher_cancel_queued(bt_batcher *b, const char *why);

/* 1 when requests are concatenated along the batch dimension. */
int bt_batcher_is_batching(const bt_batcher *b);

/* Rows per forward in effect: max_batch_size until tuned (bigger batches can cost more per
 * row). A single request with more rows still runs, alone. */
int bt_batcher_batch_limit(const bt_batcher *b);

/* Starts a tuner climb (runtime/tuner.h): the limit drops to 1 and follows the climb, and
 * every successful forward of the size being timed counts, whoever submitted it, until
 * the climb ends, which logs "berth: <label>: batch limit ..." to stderr (label copied;
 * "" logs nothing). */
void bt_batcher_tune(bt_batcher *b, const char *label);

/* The rows the climb is timing now: 0 when none is in progress. */
int bt_batcher_tuning_rows(bt_batcher *b);

/* bt_tuner_forwards_left of the climb in progress: 0 when none is. */
int bt_batcher_tuning_forwards_left(bt_batcher *b);

/* Copies up to cap of the sizes timed so far into costs and returns how many; *done is 1
 * once a climb has ended. text (when not NULL) gets the tuner's line (bt_tuner_text). */
size_t bt_batcher_tuning(bt_batcher *b, bt_batch_cost *costs, size_t cap, int *done, char *text,
                         size_t text_cap);

/* Queues one request. Takes ownership of inputs[0..n) on every path. Checks them
 * against the model's signature (casting where allowed) before queueing. timeout_ms <= 0:
 * no timeout. Returns 0 when queued (done will be called exactly once), or -1 with err
 * set (done is not called). */
int bt_batcher_submit(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                      bt_batch_done_fn done, void *ctx, bt_error *err);

/* Announces a request that is being parsed and will be submitted (or withdrawn): a
 * forming batch waits for announced requests, up to max_delay_ms, instead of running
 * without them. Pair each announce with one bt_batcher_submit_announced or withdraw. */
void bt_batcher_announce(bt_batcher *b);
void bt_batcher_withdraw(bt_batcher *b);

/* bt_batcher_submit for an announced request (announced = 1) or not (0). */
int bt_batcher_submit_announced(bt_batcher *b, DLManagedTensor **inputs, size_t n,
                                double timeout_ms, int announced, bt_batch_done_fn done, void *ctx,
                                bt_error *err);

/* Submits and waits (the caller's thread blocks; release the GIL around it). */
int bt_batcher_run(bt_batcher *b, DLManagedTensor **inputs, size_t n, double timeout_ms,
                   DLManagedTensor **outputs, size_t max_outputs, size_t *n_outputs, int *is_tuple,
                   bt_error *err);

typedef struct bt_batcher_stats {
    uint64_t requests;   /* submitted and accepted */
    uint64_t batches;    /* forwards run */
    uint64_t rows;       /* rows run */
    uint64_t errors;     /* requests that failed in forward */
    uint64_t overloaded; /* refused: queue full */
    uint64_t timeouts;   /* expired in the queue */
    uint64_t retries;    /* batched forwards that failed and were rerun request by request */
    uint64_t queued;     /* waiting now */
} bt_batcher_stats;

void bt_batcher_get_stats(bt_batcher *b, bt_batcher_stats *out);

/* Histograms: rows per forward, seconds each request waited in the queue, seconds per
 * forward (valid while the batcher lives). */
const bt_histogram *bt_batcher_batch_sizes(const bt_batcher *b);
const bt_histogram *bt_batcher_queue_seconds(const bt_batcher *b);
const bt_histogram *bt_batcher_compute_seconds(const bt_batcher *b);

/* The statistics extension's counters of this batcher's model (valid while it lives). */
bt_infer_stats *bt_batcher_infer_stats(bt_batcher *b);

#endif /* BERTH_BATCHER_H */
