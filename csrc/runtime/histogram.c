/* histogram.c - histograms with atomic buckets. */
#include "runtime/histogram.h"

#include <string.h>

#include "runtime/clock.h"

const double BT_SECONDS_BOUNDS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   10.0};
const size_t BT_SECONDS_N = sizeof BT_SECONDS_BOUNDS / sizeof BT_SECONDS_BOUNDS[0];
const double BT_BATCH_BOUNDS[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
const size_t BT_BATCH_N = sizeof BT_BATCH_BOUNDS / sizeof BT_BATCH_BOUNDS[0];

void bt_histogram_init(bt_histogram *h, const double *bounds, size_t n)
{
    if (n > BT_HIST_MAX_BOUNDS)
        n = BT_HIST_MAX_BOUNDS;
    h->n_bounds = n;
    memcpy(h->bounds, bounds, n * sizeof(double));
    for (size_t i = 0; i <= BT_HIST_MAX_BOUNDS; i++)
        atomic_init(&h->counts[i], 0);
    atomic_init(&h->count, 0);
    atomic_init(&h->sum_bits, 0); /* all-zero bits are 0.0 */
}

void bt_histogram_observe(bt_histogram *h, double value)
{
    size_t i = 0;
    while (i < h->n_bounds && value > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed), next;
    do {
        next = bt_double_bits(bt_bits_double(old) + value);
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

double bt_histogram_sum(const bt_histogram *h)
{
    return bt_bits_double(atomic_load_explicit(&h->sum_bits, memory_order_relaxed));
}

void bt_histogram_counts(const bt_histogram *h, uint64_t *out)
{
    for (size_t i = 0; i <= h->n_bounds; i++)
        out[i] = atomic_load_explicit(&h->counts[i], memory_order_relaxed);
}
