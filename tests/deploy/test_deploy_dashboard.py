"""The Grafana dashboard queries metrics that berth serve really exports, with the
label values it really uses."""
import importlib.util
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from berth.deployment import grafana
from conftest import berth_pythonpath

REPO = Path(__file__).resolve().parents[2]  # tests/deploy/ -> the repository


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("seed_model", REPO / "tests/image/seed_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.save_seed_model(tmp_path_factory.mktemp("model") / "seed.pt")
    proc = subprocess.Popen([sys.executable, "-m", "berth", "serve", str(model), "--host",
                             "127.0.0.1", "--port", "0", "--name", "seed", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PYTHONPATH": berth_pythonpath(), "PATH": "/usr/bin:/bin"})
    url, lines, deadline = None, [], time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stdout.readline()
        lines.append(line)
        match = re.search(r"listening on (http://[\d.]+:\d+)", line)
        if match:
            url = match.group(1)
        if url and "ready" in line.strip().split(":")[-1]:
            break
    try:
        assert url, "berth serve did not start: " + "".join(lines)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for _ in range(100):
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} never answered")


def test_every_dashboard_query_names_an_exported_metric_and_endpoint(server):
    _get(f"{server}/v2/health/ready")
    _get(f"{server}/v2/models/seed/infer", {"inputs": [{"name": "dense_input", "shape": [1, 10],
                                                        "datatype": "FP32", "data": [0.5] * 10}]})
    _get(f"{server}/v1/models/seed:predict", {"instances": [[0.5] * 10]})
    metrics = _get(f"{server}/metrics")
    exported = set(re.findall(r"^([a-z_]+?)(?:_bucket|_sum|_count)?(?:\{|\s)", metrics, re.M))
    board = grafana.dashboard("seed")
    queries = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = {name for q in queries for name in re.findall(r"\b(berth_[a-z_]+?)(?:_bucket|_sum|_count)?\{", q)}
    assert used and used <= exported, f"dashboard queries unknown metrics: {used - exported}"
    endpoints = set(re.findall(r'endpoint="([a-z0-9_]+)"', metrics))
    assert set(grafana.PREDICT_ENDPOINTS.split("|")) <= endpoints, endpoints
    # the model selector's label is on every series the panels filter by it
    selector = next(v for v in board["templating"]["list"] if v["name"] == "model")
    assert "model)" in selector["query"] and selector["includeAll"]
    for name in used:
        assert re.search(r"^" + name + r'(_bucket|_sum|_count)?\{model="seed",version="1"', metrics, re.M), name
