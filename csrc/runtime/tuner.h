/*
 * tuner.h - how many rows a forward should take, measured: batches of 1, 2, 4, ...
 * max_batch_size rows are timed in turn (the first forward at each size untimed, then the
 * best of BT_TUNE_TIMED per row), and the limit becomes the smallest size whose rows cost
 * within BT_TUNE_SLACK of the cheapest. Bigger is not always cheaper: a compute-bound
 * model on few cores costs the same per row at any size, and activations that outgrow
 * glibc's per-thread heaps are mapped and faulted in on every forward.
 *
 * The climb ends at max_batch_size, at a size whose rows cost BT_TUNE_STOP times the
 * cheapest (timings on a shared machine wander by a third), or after BT_TUNE_FLAT_STEPS
 * sizes in a row that did not beat the cheapest by BT_TUNE_SLACK (bigger batches would
 * only add latency). While it climbs, the limit is the size being timed, so that the
 * forwards it needs can form: warm-up's zero batches or, after readiness, served ones.
 *
 * Plain data and rules, no locks: the batcher owns one under its tuning mutex.
 */
#ifndef BERTH_TUNER_H
#define BERTH_TUNER_H

#include <stddef.h>
#include <stdint.h>

#define BT_TUNE_MAX_STEPS  24 /* 1, 2, 4, ... 2^20 and BT_BATCH_MAX_SIZE fit */
#define BT_TUNE_TIMED      3
#define BT_TUNE_SLACK      1.15
#define BT_TUNE_STOP       2.0
#define BT_TUNE_FLAT_STEPS 2

typedef struct bt_batch_cost {
    int rows;
    double seconds_per_row; /* best of the timed forwards, divided by rows */
} bt_batch_cost;

typedef struct bt_tuner {
    int max;       /* max_batch_size */
    int measuring; /* rows of the size being timed; 0 before start and once the climb ended */
    int seen;      /* forwards of that size counted so far (the first is not timed) */
    double cost;   /* the best seconds per row among them */
    double best;   /* the cheapest seconds per row of any size timed */
    int flat;      /* sizes in a row that did not beat best by BT_TUNE_SLACK */
    int limit;     /* rows per forward to allow now */
    bt_batch_cost steps[BT_TUNE_MAX_STEPS];
    size_t n_steps;
} bt_tuner;

/* Starts a climb at 1 row (limit 1). max_batch_size >= 1. */
void bt_tuner_start(bt_tuner *t, int max_batch_size);

/* Counts one successful forward of `rows` rows that took `seconds`; forwards of any other
 * size than the one being timed are not counted. Returns 1 when it finished timing a size
 * (t->limit may have changed), 0 otherwise. */
int bt_tuner_observe(bt_tuner *t, int64_t rows, double seconds);

/* The forwards the climb still needs if it runs to max_batch_size: an upper bound, since
 * it may end sooner (0 once it ended). */
int bt_tuner_forwards_left(const bt_tuner *t);

/* 1 once a started climb has ended (t->limit is then final). */
int bt_tuner_done(const bt_tuner *t);

/* "batch limit 4 rows; ms per row at 1/2/4/8 rows: 24/17.3/16.3/17.1" (while it climbs:
 * "batch limit 2 rows for now, timing batches of 2 rows as they are served; ..."),
 * NUL-terminated and cut to cap. */
void bt_tuner_text(const bt_tuner *t, char *buf, size_t cap);

#endif /* BERTH_TUNER_H */
