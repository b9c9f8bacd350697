/*
 * metrics.h - lock-free counters and histograms for the serving path, rendered as
 * Prometheus text (exposition format 0.0.4) by the server's GET /metrics.
 */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "serving/codec.h"

#define BT_HIST_MAX_BOUNDS 16

/* A histogram with fixed upper bounds; observe() is safe from any thread. */
typedef struct bt_histogram {
    size_t n_bounds;
    double bounds[BT_HIST_MAX_BOUNDS];             /* ascending upper bounds */
    _Atomic uint64_t counts[BT_HIST_MAX_BOUNDS + 1]; /* per bucket, last is +Inf */
    _Atomic uint64_t count;
    _Atomic uint64_t sum_bits;                     /* the sum, as the bits of a double */
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

/* Appends "# HELP/# TYPE" lines and the cumulative buckets, _sum and _count of h.
 * labels is "" or a label list without braces (endpoint="infer"). help NULL: no
 * HELP/TYPE lines (further series of a family already introduced). */
void bt_histogram_render(bt_buf *out, const bt_histogram *h, const char *name,
                         const char *help, const char *labels);

#endif /* BERTH_METRICS_H */
