"""Checks a running berth model server from outside, as a client would.

Waits for readiness, sends Open Inference Protocol v2 and KServe v1 requests and
compares the answers with ``berth.load(model).predict`` on the same inputs, and checks
that /metrics exports every metric the Grafana dashboard queries.

Usage: check_server.py --url http://127.0.0.1:PORT --model model.pt --name NAME
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np

import berth
from berth.deployment.grafana import METRICS


def http(method, url, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(url, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, _ = http("GET", f"{url}/v2/health/ready", timeout=2)
            if status == 200:
                return time.monotonic() - (deadline - timeout)
            last = f"HTTP {status}"
        except OSError as err:
            last = repr(err)
        time.sleep(0.5)
    raise SystemExit(f"check_server: {url} not ready after {timeout} s (last: {last})")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    waited = wait_ready(args.url, args.timeout)
    print(f"check_server: ready after {waited:.1f} s")
    status, _ = http("GET", f"{args.url}/v2/health/live")
    assert status == 200, f"live: HTTP {status}"
    status, _ = http("GET", f"{args.url}/v2/models/{args.name}/ready")
    assert status == 200, f"model ready: HTTP {status}"

    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 10)).astype(np.float32)
    expected = np.asarray(berth.load(args.model).predict(x))
    body = {"inputs": [{"name": "dense_input", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    status, raw = http("POST", f"{args.url}/v2/models/{args.name}/infer", body)
    assert status == 200, f"v2 infer: HTTP {status}: {raw[:300]!r}"
    reply = json.loads(raw)
    assert reply["model_name"] == args.name, reply
    (output,) = reply["outputs"]
    got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=1e-5, atol=1e-6)
    print(f"check_server: v2 infer matches berth.load(...).predict on {x.shape} "
          f"(max abs diff {np.abs(got - expected.reshape(got.shape)).max():.2e})")

    status, raw = http("POST", f"{args.url}/v1/models/{args.name}:predict",
                       {"instances": x[:2].tolist()})
    assert status == 200, f"v1 predict: HTTP {status}: {raw[:300]!r}"
    predictions = np.asarray(json.loads(raw)["predictions"], dtype=np.float32)
    np.testing.assert_allclose(predictions.reshape(2, -1), expected[:2].reshape(2, -1),
                               rtol=1e-5, atol=1e-6)
    print("check_server: v1 predict matches too")

    status, raw = http("POST", f"{args.url}/v2/models/{args.name}/infer",
                       {"inputs": [{"name": "dense_input", "shape": [1, 3],
                                    "datatype": "FP32", "data": [1, 2, 3]}]})
    assert 400 <= status < 500, f"a wrong shape must get a 4xx, got HTTP {status}"

    status, raw = http("GET", f"{args.url}/metrics")
    assert status == 200, f"metrics: HTTP {status}"
    text = raw.decode()
    missing = [m for m in METRICS.values() if m not in text]
    assert not missing, f"/metrics lacks metrics the dashboard queries: {missing}"
    print(f"check_server: /metrics exports all {len(METRICS)} dashboard metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
