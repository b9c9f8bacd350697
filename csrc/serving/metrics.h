/*
 * metrics.h - the runtime's measurements as the wire shows them: histograms as Prometheus
 * text (exposition format 0.0.4) for GET /metrics, and a model's inference statistics as
 * an entry of Triton's statistics extension JSON.
 */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include "runtime/histogram.h"
#include "runtime/stats.h"
#include "serving/buffer.h"

/* Appends "# HELP/# TYPE" lines and the cumulative buckets, _sum and _count of h.
 * labels is "" or a label list without braces (endpoint="infer"). help NULL: no
 * HELP/TYPE lines (further series of a family already introduced). */
void bt_histogram_render(bt_buf *out, const bt_histogram *h, const char *name, const char *help,
                         const char *labels);

/* Appends one model_stats entry of Triton's JSON: {"name":..,"version":..,...}. */
void bt_stats_json(bt_buf *out, const bt_infer_stats *s, const char *name, const char *version);

#endif /* BERTH_METRICS_H */
