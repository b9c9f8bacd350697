"""Many models in one server: two models side by side against one, and a version swap
under load, in one run.

1. Side by side: `berth serve REPO/` with one model (the seed MLP as `a`), then with two
   (`a` and `b`, the same MLP), each driven by wrk at 16 and 64 connections with the
   same 1-row JSON request; with two models every connection alternates between them.
   Reported: requests/s and p99, and the two-model/one-model ratios.
2. Swap under load: `--model-control-mode poll` serving `m` version 1 (resnet18-sized
   work would hide the swap in noise: the model is a 10 -> 512 -> 512 -> 1 MLP), while
   Python clients on keep-alive connections record every request's status and latency;
   version 2 is written into the repository mid-run. Reported: p99 per one-second window
   before, during and after the swap, failed requests (non-200), and the time from the
   file's arrival to the first answer from version 2.

    .venv/bin/python benchmarks/bench_repository.py [--duration 5] [--swap-seconds 12]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_server  # noqa: E402  (wrk helpers, the seed MLP)

PORT = bench_server.PORT


def save_mlp(path, hidden=(128, 64), seed=0):
    import torch
    torch.manual_seed(seed)
    layers, width = [], 10
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    module = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1)).eval()
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 10]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.jit.save(torch.jit.script(module), tmp, _extra_files={"berth.json": json.dumps(meta)})
    os.replace(tmp, path)


def serve(repo, *args):
    proc = subprocess.Popen([sys.executable, "-m", "berth", "serve", repo, "--host", "127.0.0.1",
                             "--port", str(PORT), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench_server.wait_ready(proc, timeout=300)
    return proc


def alternating_script(path, body_file, models):
    """A wrk script whose requests cycle through the models' infer paths."""
    paths = ", ".join(f'"/v2/models/{m}/infer"' for m in models)
    with open(path, "w") as f:
        f.write(f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body_file}", "rb")
wrk.body = f:read("*a")
f:close()
local paths = {{{paths}}}
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format(nil, paths[i])
end
""")
    return path


def side_by_side(tmp, duration, connections):
    body_file = os.path.join(tmp, "body.json")
    with open(body_file, "w") as f:
        f.write(bench_server.request_body([10]))
    rows = {}
    for models in (("a",), ("a", "b")):
        repo = os.path.join(tmp, "repo-" + "".join(models))
        for m in models:
            save_mlp(os.path.join(repo, m, "1", "model.pt"))
        script = alternating_script(os.path.join(tmp, f"{len(models)}.lua"), body_file, models)
        proc = serve(repo)
        try:
            bench_server.run_wrk(script, 4, 2)  # untimed warm-up
            for c in connections:
                rps, p50, p99, bad, errors = bench_server.run_wrk(script, c, duration)
                rows[(len(models), c)] = (rps, p50, p99, bad)
                print(f"{len(models)} model(s) c={c:<3} {rps:9.0f} req/s  p50 {p50:6.2f} ms  "
                      f"p99 {p99:6.2f} ms  non-2xx {bad} {errors}", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
        time.sleep(1)
    print("\n| models | conns | req/s | p50 ms | p99 ms | non-2xx |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (n, c), (rps, p50, p99, bad) in sorted(rows.items()):
        print(f"| {n} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {bad} |")
    for c in connections:
        one, two = rows[(1, c)], rows[(2, c)]
        print(f"c={c}: two models / one model: {two[0] / one[0]:.2f}x req/s, p99 {two[2]:.2f} vs "
              f"{one[2]:.2f} ms")


def swap_under_load(tmp, seconds, clients):
    repo = os.path.join(tmp, "swap")
    hidden = (512, 512)
    save_mlp(os.path.join(repo, "m", "1", "model.pt"), hidden, seed=1)
    staged = os.path.join(tmp, "v2.pt")
    save_mlp(staged, hidden, seed=2)
    proc = serve(repo, "--model-control-mode", "poll", "--repository-poll-secs", "0.5")
    body = bench_server.request_body([10]).encode()
    records, stop = [], threading.Event()
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        mine = []
        while not stop.is_set():
            start = time.monotonic()
            try:
                conn.request("POST", "/v2/models/m/infer", body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                version = json.loads(data).get("model_version") if resp.status == 200 else None
                status = resp.status
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                status, version = -1, None
            mine.append((start, time.monotonic() - start, status, version))
        with lock:
            records.extend(mine)

    try:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(seconds / 3)
        swapped_at = time.monotonic()
        os.makedirs(os.path.join(repo, "m", "2"))
        shutil.copy(staged, os.path.join(repo, "m", "2", "model.pt.tmp"))
        os.replace(os.path.join(repo, "m", "2", "model.pt.tmp"), os.path.join(repo, "m", "2", "model.pt"))
        time.sleep(seconds - seconds / 3)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(60)
    records.sort()
    failed = sum(1 for r in records if r[2] != 200)
    first_v2 = next((r[0] + r[1] for r in records if r[3] == "2"), None)
    windows = {}
    for start, latency, _, _ in records:
        windows.setdefault(int(start - t0), []).append(latency * 1000)
    last = max(windows)
    if len(windows[last]) < len(windows[0]) / 2:  # the clients stopped early in it
        del windows[last]
    print(f"\nswap under load: {len(records)} requests from {clients} clients, {failed} not 200; "
          f"version 2 written at {swapped_at - t0:.1f} s, first answered by it "
          + (f"{first_v2 - swapped_at:.2f} s later" if first_v2 else "never"))
    print("\n| second | requests | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|")
    p99s = []
    for second in sorted(windows):
        lat = sorted(windows[second])
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        p99s.append(p99)
        mark = " (swap)" if second == int(swapped_at - t0) else ""
        print(f"| {second}{mark} | {len(lat)} | {statistics.median(lat):.2f} | {p99:.2f} | {lat[-1]:.2f} |")
    print(f"\nworst one-second p99 {max(p99s):.2f} ms against a median one-second p99 of "
          f"{statistics.median(p99s):.2f} ms ({max(p99s) / statistics.median(p99s):.1f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--swap-seconds", type=float, default=12.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        side_by_side(tmp, args.duration, [int(c) for c in args.connections.split(",")])
        swap_under_load(tmp, args.swap_seconds, args.clients)


if __name__ == "__main__":
    main()
