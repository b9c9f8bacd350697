/* metrics.c - histograms as Prometheus text, inference statistics as Triton's JSON. */
#include "serving/metrics.h"

void bt_histogram_render(bt_buf *out, const bt_histogram *h, const char *name, const char *help,
                         const char *labels)
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
            bt_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, h->bounds[i],
                          (unsigned long long)cumulative);
        else
            bt_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                          (unsigned long long)cumulative);
    }
    bt_buf_printf(out, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n", name, labels, bt_histogram_sum(h),
                  name, labels, (unsigned long long)cumulative);
}

static void duration_json(bt_buf *out, const char *key, const bt_duration_stat *d)
{
    bt_buf_printf(out, "\"%s\":{\"count\":%llu,\"ns\":%llu}", key,
                  (unsigned long long)atomic_load_explicit(&d->count, memory_order_relaxed),
                  (unsigned long long)atomic_load_explicit(&d->ns, memory_order_relaxed));
}

void bt_stats_json(bt_buf *out, const bt_infer_stats *s, const char *name, const char *version)
{
    bt_buf_puts(out, "{\"name\":");
    bt_buf_json_string(out, name);
    bt_buf_puts(out, ",\"version\":");
    bt_buf_json_string(out, version);
    bt_buf_printf(out,
                  ",\"last_inference\":%llu,\"inference_count\":%llu,"
                  "\"execution_count\":%llu,\"inference_stats\":{",
                  (unsigned long long)atomic_load(&s->last_inference_ms),
                  (unsigned long long)atomic_load(&s->inference_count),
                  (unsigned long long)atomic_load(&s->execution_count));
    duration_json(out, "success", &s->success);
    bt_buf_puts(out, ",");
    duration_json(out, "fail", &s->fail);
    bt_buf_puts(out, ",");
    duration_json(out, "queue", &s->queue);
    bt_buf_puts(out, ",");
    duration_json(out, "compute_input", &s->compute_input);
    bt_buf_puts(out, ",");
    duration_json(out, "compute_infer", &s->compute_infer);
    bt_buf_puts(out, ",");
    duration_json(out, "compute_output", &s->compute_output);
    bt_buf_puts(out, "},\"batch_stats\":[");
    /* ascending batch size, as Triton lists them */
    int64_t prev = 0;
    int first = 1;
    for (;;) {
        const bt_batch_stat *next = NULL;
        for (size_t i = 0; i < BT_STATS_BATCH_SIZES; i++) {
            int64_t r = atomic_load(&s->batches[i].rows);
            if (r > prev && (!next || r < atomic_load(&next->rows)))
                next = &s->batches[i];
        }
        if (!next)
            break;
        prev = atomic_load(&next->rows);
        bt_buf_printf(out, "%s{\"batch_size\":%lld,", first ? "" : ",", (long long)prev);
        duration_json(out, "compute_input", &next->compute_input);
        bt_buf_puts(out, ",");
        duration_json(out, "compute_infer", &next->compute_infer);
        bt_buf_puts(out, ",");
        duration_json(out, "compute_output", &next->compute_output);
        bt_buf_puts(out, "}");
        first = 0;
    }
    bt_buf_puts(out, "]}");
}
