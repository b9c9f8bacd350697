/*
 * tuner.c - the batch limit's climb (see tuner.h).
 */
#include "runtime/tuner.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void bt_tuner_start(bt_tuner *t, int max_batch_size)
{
    memset(t, 0, sizeof *t);
    t->max = max_batch_size < 1 ? 1 : max_batch_size;
    t->measuring = 1;
    t->cost = HUGE_VAL;
    t->best = HUGE_VAL;
    t->limit = 1;
}

int bt_tuner_done(const bt_tuner *t) { return t->measuring == 0 && t->n_steps > 0; }

/* The size timed after `size`: double it, capped at max; 0 after max. */
static int next_size(const bt_tuner *t, int size)
{
    return size == t->max ? 0 : size > t->max / 2 ? t->max : size * 2;
}

int bt_tuner_forwards_left(const bt_tuner *t)
{
    if (t->measuring == 0)
        return 0;
    int forwards = -t->seen;
    for (int size = t->measuring; size > 0; size = next_size(t, size))
        forwards += BT_TUNE_TIMED + 1;
    return forwards;
}

/* The smallest size timed whose rows cost within BT_TUNE_SLACK of the cheapest. */
static int settled_limit(const bt_tuner *t)
{
    for (size_t i = 0; i < t->n_steps; i++)
        if (t->steps[i].seconds_per_row <= BT_TUNE_SLACK * t->best)
            return t->steps[i].rows;
    return t->steps[t->n_steps - 1].rows;
}

int bt_tuner_observe(bt_tuner *t, int64_t rows, double seconds)
{
    const int size = t->measuring;
    if (size == 0 || rows != size)
        return 0;
    if (t->seen++ == 0)
        return 0; /* the first forward at a new shape pays for the shape itself */
    if (seconds / size < t->cost)
        t->cost = seconds / size;
    if (t->seen <= BT_TUNE_TIMED)
        return 0;

    const double cost = t->cost;
    t->steps[t->n_steps].rows = size;
    t->steps[t->n_steps].seconds_per_row = cost;
    t->n_steps++;
    t->flat = t->n_steps > 1 && cost * BT_TUNE_SLACK > t->best ? t->flat + 1 : 0;
    if (cost < t->best)
        t->best = cost;
    if (size == t->max || cost > BT_TUNE_STOP * t->best || t->flat >= BT_TUNE_FLAT_STEPS ||
        t->n_steps == BT_TUNE_MAX_STEPS) {
        t->measuring = 0;
        t->limit = settled_limit(t);
        return 1;
    }
    t->measuring = next_size(t, size);
    t->seen = 0;
    t->cost = HUGE_VAL;
    t->limit = t->measuring;
    return 1;
}

void bt_tuner_text(const bt_tuner *t, char *buf, size_t cap)
{
    if (cap == 0)
        return;
    size_t k;
    if (bt_tuner_done(t))
        k = (size_t)snprintf(buf, cap, "batch limit %d rows; ", t->limit);
    else
        k = (size_t)snprintf(
            buf, cap, "batch limit %d rows for now, timing batches of %d rows as they are served; ",
            t->limit, t->measuring);
    if (t->n_steps == 0 && k < cap) {
        snprintf(buf + k, cap - k, "no batch size timed yet");
        return;
    }
    if (k < cap)
        k += (size_t)snprintf(buf + k, cap - k, "ms per row at ");
    for (size_t i = 0; i < t->n_steps && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? "/%d" : "%d", t->steps[i].rows);
    if (k < cap)
        k += (size_t)snprintf(buf + k, cap - k, " rows: ");
    for (size_t i = 0; i < t->n_steps && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? "/%.3g" : "%.3g",
                              t->steps[i].seconds_per_row * 1000.0);
}
