/* metrics.c - histograms with atomic buckets, rendered as Prometheus text. */
#include "serving/metrics.h"

#include "runtime/clock.h"

#include <string.h>

const double BT_SECONDS_BOUNDS[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                    0.025,  0.05,    0.1,    0.25,  0.5,    1.0,   2.5, 10.0};
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
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, next,
                                                    memory_order_relaxed,
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

void bt_histogram_render(bt_buf *out, const bt_histogram *h, const char *name,
                         const char *help, const char *labels)
{
    if (help)
        bt_buf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const char *sep = labels[0] ? "," : "";
    uint64_t counts[BT_HIST_MAX_BOUNDS + 1];
    bt_histogram_counts(h, counts);
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= h->n_bounds; i++) {
        cumulative += counts[i];
        if (i < h->n_bounds)
            bt_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                          h->bounds[i], (unsigned long long)cumulative);
        else
            bt_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                          (unsigned long long)cumulative);
    }
    bt_buf_printf(out, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels,
                  bt_histogram_sum(h), name, labels, (unsigned long long)cumulative);
}
