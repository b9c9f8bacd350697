"""What a resnet18 request's JSON body costs berth serve, against a baseline build of
berth, in one run: the same 1x3x224x224 FP32 input sent as v2 JSON (1.5 MB of numbers)
and as binary tensor data, one request at a time, and the difference between the two
(receiving and decoding the JSON, and the larger body's transfer). The figure compared is
the server's own time outside the forward per request (statistics extension: success
minus compute_infer), which a noisy forward does not blur; client latencies come with it.

Each build is started in turn (rounds interleaved, so the machine's drift hits both),
pinned to CPU 0 with batch tuning off (the model then runs at 1 row, as these requests
come); the client is pinned to CPU 1. Per build and body: the median client latency over
the requests of every round, and the median over rounds of the server's time per request
and of its forward (compute_infer); the rest is the codec, the queue and the handler.

    .venv/bin/python benchmarks/bench_decode.py --baseline /path/to/other/python [--rounds 3]

--baseline is a folder that holds another build's `berth` package (with its native
libraries), put first on PYTHONPATH for the baseline's server; this run's berth is the
one `import berth` finds here.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_server import binary_request, make_models, request_body  # noqa: E402

PORT = 18490
URL = f"http://127.0.0.1:{PORT}"


def post(path, body, headers):
    request = urllib.request.Request(URL + path, data=body, headers=headers, method="POST")
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as reply:
        reply.read()
        assert reply.status == 200
    return (time.perf_counter() - start) * 1e3


def stats():
    with urllib.request.urlopen(URL + "/v2/models/m/stats", timeout=10) as reply:
        model = json.loads(reply.read())["model_stats"][0]["inference_stats"]
    return {k: (v["count"], v["ns"]) for k, v in model.items()}


def per_request_ms(before, after, key):
    count = after[key][0] - before[key][0]
    return (after[key][1] - before[key][1]) / max(count, 1) / 1e6


def measure(pythonpath, model_path, bodies, requests):
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else dict(os.environ)
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "berth", "serve",
                               model_path, "--host", "127.0.0.1", "--port", str(PORT),
                               "--name", "m", "--no-batch-tuning"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(URL + "/v2/health/ready", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(server.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        result = {}
        for kind, (body, headers) in bodies.items():
            for _ in range(2):  # untimed: the first requests fault in the buffers
                post("/v2/models/m/infer", body, headers)
            before = stats()
            latencies = [post("/v2/models/m/infer", body, headers) for _ in range(requests)]
            after = stats()
            result[kind] = {"latencies": latencies,
                            "server_ms": per_request_ms(before, after, "success"),
                            "forward_ms": per_request_ms(before, after, "compute_infer")}
        return result
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True,
                        help="folder holding the baseline build's berth package")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20, help="timed requests per body and round")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        path, shape = make_models(tmp)["resnet18"]
        binary, header_len = binary_request(shape)
        bodies = {"json": (request_body(shape).encode(), {"Content-Type": "application/json"}),
                  "binary": (binary, {"Content-Type": "application/octet-stream",
                                      "Inference-Header-Content-Length": str(header_len)})}
        print(f"JSON body {len(bodies['json'][0]):,} bytes, binary {len(binary):,} bytes")
        builds = {"baseline": args.baseline, "this build": ""}
        runs = {name: [] for name in builds}
        for r in range(args.rounds):
            order = list(builds) if r % 2 == 0 else list(reversed(builds))
            for name in order:
                runs[name].append(measure(builds[name], path, bodies, args.requests))
                row = runs[name][-1]
                print(f"round {r + 1} {name}: json p50 {statistics.median(row['json']['latencies']):.1f} ms, "
                      f"binary p50 {statistics.median(row['binary']['latencies']):.1f} ms", flush=True)
    print("\n| build | body | client p50 ms | server ms per request | forward ms | server outside "
          "the forward ms |")
    print("|---|---|---:|---:|---:|---:|")
    outside = {}
    for name, rounds in runs.items():
        for kind in ("json", "binary"):
            p50 = statistics.median([v for r in rounds for v in r[kind]["latencies"]])
            server = statistics.median(r[kind]["server_ms"] for r in rounds)
            forward = statistics.median(r[kind]["forward_ms"] for r in rounds)
            rest = statistics.median(r[kind]["server_ms"] - r[kind]["forward_ms"] for r in rounds)
            outside[name, kind] = rest
            print(f"| {name} | {kind} | {p50:.1f} | {server:.1f} | {forward:.1f} | {rest:.1f} |")
    ratio = outside["this build", "json"] / outside["baseline", "json"]
    print(f"\nJSON request, server time outside the forward, this build / baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
