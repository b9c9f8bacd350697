"""A Grafana dashboard for one berth model server, shipped as a ConfigMap.

The ConfigMap carries the label Grafana's dashboard sidecar watches
(``grafana_dashboard: "1"``, the kube-prometheus-stack / Grafana Helm chart default).
Panels query the server's Prometheus metrics named in ``METRICS``; the image test
checks that a running server exports every one of them.
"""
import json

METRICS = {
    "requests": "berth_requests_total",                 # counter {model, version, endpoint, code}
    "latency": "berth_request_duration_seconds",        # histogram {model, version, endpoint}
    "queue": "berth_queue_seconds",                     # histogram {model, version}
    "batch": "berth_batch_size",                        # histogram {model, version}
    "inflight": "berth_inflight_requests",              # gauge {model, version}
}
# The server's `endpoint` label values of the prediction endpoints (v2 infer, v1 predict).
PREDICT_ENDPOINTS = "infer|v1_predict"


def _panel(panel_id, title, unit, targets, x, y):
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)],
    }


def dashboard(name):
    """The dashboard model (a dict) for the server named ``name``: every panel shows the
    models the ``model`` selector picks (all by default), by model."""
    pods = f'namespace="$namespace", pod=~"{name}-.*"'
    sel = f'{pods}, model=~"$model"'
    predict = f'{sel}, endpoint=~"{PREDICT_ENDPOINTS}"'
    req, lat, queue, batch = (METRICS[k] for k in ("requests", "latency", "queue", "batch"))

    def quantiles(metric, where=sel):
        return [(f"histogram_quantile({q}, sum by (le, model) (rate({metric}_bucket{{{where}}}[5m])))",
                 f"{{{{model}}}} p{int(q * 100)}") for q in (0.5, 0.9, 0.99)]

    panels = [
        _panel(1, "Request rate (predictions)", "reqps",
               [(f"sum by (model, code) (rate({req}{{{predict}}}[5m]))", "{{model}} {{code}}")], 0, 0),
        _panel(2, "Latency percentiles (predictions)", "s", quantiles(lat, predict), 12, 0),
        _panel(3, "Queue time percentiles", "s", quantiles(queue), 0, 8),
        _panel(4, "Batch size", "none",
               [(f"sum by (model) (rate({batch}_sum{{{sel}}}[5m])) / "
                 f"sum by (model) (rate({batch}_count{{{sel}}}[5m]))", "{{model}} mean")]
               + quantiles(batch)[1:], 12, 8),
        _panel(5, "Errors (4xx and 5xx per second)", "reqps",
               [(f'sum by (model, code) (rate({req}{{{sel}, code=~"4..|5.."}}[5m]))',
                 "{{model}} {{code}}")], 0, 16),
        _panel(6, "In-flight requests", "none",
               [(f"sum by (model) ({METRICS['inflight']}{{{sel}}})", "{{model}}")], 12, 16),
    ]
    return {
        "title": f"berth: {name}",
        "uid": f"berth-{name}"[:40],
        "tags": ["berth", "model-serving"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Data source"},
            {"name": "namespace", "type": "query", "label": "Namespace",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": f"label_values({req}, namespace)", "refresh": 2},
            {"name": "model", "type": "query", "label": "Model",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": f"label_values({req}{{{pods}}}, model)", "refresh": 2,
             "multi": True, "includeAll": True, "allValue": ".*",
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


def dashboard_config_map(opts, labels):
    """The ConfigMap holding the dashboard JSON for Grafana's sidecar."""
    meta = {"name": f"{opts.name}-grafana-dashboard"}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = {**labels, "grafana_dashboard": "1"}
    text = json.dumps(dashboard(opts.name), indent=2, sort_keys=True) + "\n"
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {f"berth-{opts.name}.json": text}}
