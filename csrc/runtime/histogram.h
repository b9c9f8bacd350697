/*
 * histogram.h - lock-free histograms with fixed bounds: the batcher records batch sizes,
 * queueing and compute times in them; the serving layer renders them (serving/metrics.h).
 */
#ifndef BERTH_HISTOGRAM_H
#define BERTH_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define BT_HIST_MAX_BOUNDS 16

/* A histogram with fixed upper bounds; observe() is safe from any thread. */
typedef struct bt_histogram {
    size_t n_bounds;
    double bounds[BT_HIST_MAX_BOUNDS];               /* ascending upper bounds */
    _Atomic uint64_t counts[BT_HIST_MAX_BOUNDS + 1]; /* per bucket, last is +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_bits; /* the sum, as the bits of a double */
} bt_histogram;

/* Bounds for durations in seconds and for batch sizes. */
extern const double BT_SECONDS_BOUNDS[];
extern const size_t BT_SECONDS_N;
extern const double BT_BATCH_BOUNDS[];
extern const size_t BT_BATCH_N;

void bt_histogram_init(bt_histogram *h, const double *bounds, size_t n);
void bt_histogram_observe(bt_histogram *h, double value);
double bt_histogram_sum(const bt_histogram *h);
/* Copies the per-bucket counts (n_bounds + 1 of them) into out. */
void bt_histogram_counts(const bt_histogram *h, uint64_t *out);

#endif /* BERTH_HISTOGRAM_H */
