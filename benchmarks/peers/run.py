"""berth serve against the real serving peers, side by side in one run.

Systems: berth (`python -m berth serve`), the HTTP floor (libmicrohttpd answering every
POST with a fixed body, floor/floor.c), and the peers in this folder, each from its own
pinned venv under build/peers/<peer>/ (created on demand from <peer>/requirements.txt;
never a berth dependency): MLServer, KServe's Python model server, LitServe, BentoML,
TorchServe and Ray Serve. Every system serves the seed MLP (10 -> 128 -> 64 -> 1) and
resnet18 (tests/models.py, random weights, 1x3x224x224) saved as TorchScript by
bench_server.make_models, and gets the same request content (one row) as JSON: the Open
Inference Protocol v2 body where the system speaks it or decodes it in its adapter,
BentoML's {"x": [[...]]} (its API's argument name) otherwise.

Fairness on 2 cores: each server runs under `taskset -c 0`, the load generator under
`taskset -c 1`, for every system. No thread setting is forced: torch's default intra-op
thread count follows the affinity mask (1 here), berth reads it too (1 libtorch thread,
2 HTTP threads); each adapter logs what torch chose.

Per model, per round, every system in turn (rounds interleaved, each round's order
rotated): start the server, time process start -> ready (its readiness endpoint says 200, then a
real inference request gets 200: cold start), warm up, then
  - concurrency mode: wrk (-t1) at 1/4/16/64 connections: req/s, p50, p99;
  - request-rate mode: the highest rate of Poisson-like arrivals whose p99 stays under the
    SLO (seed MLP 5 ms, resnet18 250 ms), by bisection; the rate reported is the one asked. wrk has no open-loop Poisson
    mode (--load perf_analyzer has one, for the Open Inference Protocol servers), so arrivals
    come from many wrk connections each waiting an exponentially distributed time before
    each request (wrk's delay() hook): with think times far above the latency the
    superposition is close to a Poisson process. A point passes when p99 <= SLO, no
    errors, and the achieved rate is >= 85% of the rate asked (where the window holds
    100 arrivals or more; fewer are too noisy to judge);
  - peak RSS: VmHWM summed over the server's whole process tree (workers, Ray's daemons,
    TorchServe's JVM and Python workers).
Medians over rounds are reported, with every round's figure. In full mode each
concurrency figure follows perf_analyzer's stability rule: windows are repeated until the
last 3 have req/s within 10% of their mean (at most 6), and the last 3 are reported.

With --load perf_analyzer, Triton's own client (make perf-analyzer) replaces wrk and
open_loop.py for the systems that speak the Open Inference Protocol: its concurrency mode
(1/4/16) and its request-rate mode with Poisson arrivals for the same bisection, each
figure under its own stability rule (the last 3 windows' throughput and p99 within 10%).
It sends the same row, as JSON tensors, or binary ones for the *-binary systems.

    .venv/bin/python benchmarks/peers/run.py --quick [--systems berth,floor,mlserver]
    .venv/bin/python benchmarks/peers/run.py --load perf_analyzer --systems berth,mlserver,kserve-binary
"""
import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))
import bench_server  # noqa: E402  (make_models, request_input, wrk_script, to_ms)

BUILD = os.path.join(ROOT, "build", "peers")
PERF_ANALYZER = os.path.join(ROOT, "build", "perf-analyzer", "perf_analyzer")  # make perf-analyzer
PORT = 18480
SERVER_CPU, CLIENT_CPU = "0", "1"
SLO_MS = {"mlp": 5.0, "resnet18": 250.0}
# Rate points for SLOs this long are sent by open_loop.py (Python, ~1 ms of client jitter
# against 250 ms); the MLP's 5 ms SLO needs wrk's C client.
OPEN_LOOP_SLO_MS = 100.0
V2_URL = "/v2/models/m/infer"

# name -> how to start it and what to send. "venv": the peer's folder under benchmarks/peers
# (its requirements.txt) and the distribution whose version is reported.
SYSTEMS = {
    "berth": {"label": "berth serve", "url": V2_URL, "body": "v2", "ready": "/v2/health/ready"},
    # Not in the default run: berth without batch-limit tuning (batches fill up to
    # --max-batch-size, and warm-up runs one batch of that size before it says ready).
    "berth-nt": {"label": "berth serve --no-batch-tuning", "url": V2_URL, "body": "v2",
                 "ready": "/v2/health/ready"},
    # Not in the default run: the same servers sent the input with the binary tensor data
    # extension (Triton's; KServe's Python server reads it too, MLServer does not).
    "berth-binary": {"label": "berth serve, binary tensors", "serve_as": "berth", "url": V2_URL,
                     "body": "binary", "ready": "/v2/health/ready"},
    # Not in the default run: berth serving the same modules exported as .pt2 packages
    # (torch.export + AOTInductor, berth.export; compiled once per run). No peer loads one.
    "berth-pt2": {"label": "berth serve, .pt2", "serve_as": "berth", "file": "pt2", "url": V2_URL,
                  "body": "v2", "ready": "/v2/health/ready"},
    "floor": {"label": "HTTP floor (libmicrohttpd)", "url": V2_URL, "body": "v2"},
    "mlserver": {"label": "MLServer", "venv": "mlserver", "url": V2_URL, "body": "v2",
                 "ready": "/v2/health/ready"},
    "kserve": {"label": "KServe (Python server)", "venv": "kserve", "url": V2_URL, "body": "v2",
               "ready": "/v2/health/ready"},
    "kserve-binary": {"label": "KServe, binary tensors", "serve_as": "kserve", "venv": "kserve",
                      "url": V2_URL, "body": "binary", "ready": "/v2/health/ready"},
    "litserve": {"label": "LitServe", "venv": "litserve", "url": "/predict", "body": "v2",
                 "ready": "/health"},
    "bentoml": {"label": "BentoML", "venv": "bentoml", "url": "/predict", "body": "bentoml",
                "ready": "/readyz"},
    "torchserve": {"label": "TorchServe", "venv": "torchserve", "url": "/predictions/m",
                   "body": "v2", "apt": ["openjdk-17-jre-headless"], "ready": "/ping"},
    "rayserve": {"label": "Ray Serve", "venv": "rayserve", "url": "/predict", "body": "v2",
                 "dist": "ray", "ready": "/-/healthz"},
}
ORDER = ["berth", "berth-nt", "berth-binary", "berth-pt2", "floor", "mlserver", "kserve", "kserve-binary",
         "litserve", "bentoml", "torchserve", "rayserve"]
NOT_BY_DEFAULT = ("berth-nt", "berth-binary", "berth-pt2", "kserve-binary")
# What --load perf_analyzer drives: the Open Inference Protocol servers, sent JSON tensors,
# or binary ones where the system's body is "binary" (perf_analyzer's default format).
PERF_ANALYZER_SYSTEMS = ("berth", "berth-nt", "berth-binary", "berth-pt2", "mlserver", "kserve-binary")
PERF_ANALYZER_CANNOT = {
    "kserve": "perf_analyzer 2.40 cannot read KServe's JSON answers: each output has "
              '"parameters": null, and its HTTP client then looks for binary_data_size in it '
              "(kserve-binary is measured instead)"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup

def apt_install(packages):
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout
        != "install ok installed"]
    if not missing:
        return
    sudo = [] if os.getuid() == 0 else ["sudo"]
    log(f"installing Debian packages: {' '.join(missing)}")
    subprocess.run(sudo + ["apt-get", "update", "-q"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def ensure_venv(peer, base_python):
    """build/peers/<peer>/ with the pinned requirements; returns its python. Raises
    RuntimeError with pip's last lines when the install fails."""
    req = os.path.join(HERE, peer, "requirements.txt")
    venv = os.path.join(BUILD, peer)
    stamp = os.path.join(venv, ".requirements")
    py = os.path.join(venv, "bin", "python")
    with open(req) as f:
        wanted = f.read()
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return py
    log(f"{peer}: creating {venv} from {os.path.relpath(req, ROOT)}")
    os.makedirs(BUILD, exist_ok=True)
    if not os.path.exists(py):
        subprocess.run([base_python, "-m", "venv", venv], check=True)
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "-r", req], capture_output=True, text=True)
    with open(venv + ".install.log", "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode:
        errors = [line for line in (proc.stdout + proc.stderr).splitlines()
                  if line.strip() and "is ignored: it is neither" not in line]
        raise RuntimeError("pip install failed: " + " | ".join(errors[-6:]))
    with open(stamp, "w") as f:
        f.write(wanted)
    return py


def build_floor():
    src = os.path.join(HERE, "floor", "floor.c")
    exe = os.path.join(BUILD, "floor", "floor")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libmicrohttpd"],
                               capture_output=True, text=True, check=True).stdout.split()
        subprocess.run(["gcc", "-O2", "-Wall", "-o", exe, src, *flags], check=True)
    return exe


def version_of(py, dist):
    return subprocess.run([py, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                          capture_output=True, text=True).stdout.strip() or "?"


def server_command(name, py, model_path, port, floor_exe, config=None):
    """config: the file of triton_config(), which the MLServer and KServe adapters serve
    when they are given it (perf_analyzer's load only)."""
    name = SYSTEMS[name].get("serve_as", name)
    if name in ("berth", "berth-nt"):
        return [py, "-m", "berth", "serve", model_path, "--host", "127.0.0.1", "--port", str(port),
                "--name", "m"] + (["--no-batch-tuning"] if name == "berth-nt" else [])
    if name == "floor":
        return [floor_exe, str(port), "2"]  # 2 threads: as many as berth's HTTP threads here
    return [py, os.path.join(HERE, name, "server.py"), model_path, str(port)] + \
        ([config] if config and name in ("mlserver", "kserve") else [])


# ---------------------------------------------------------------- requests

def write_body(kind, shape, path):
    """Writes one request's body; returns the headers it is sent with."""
    x = bench_server.request_input(shape)
    if kind == "binary":
        body, header_length = bench_server.binary_request(shape)
        with open(path, "wb") as f:
            f.write(body)
        return {"Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length)}
    if kind == "bentoml":
        body = {"x": [[round(float(v), 6) for v in x.ravel()]]} if len(shape) == 1 else \
            {"x": [[[[round(float(v), 6) for v in r] for r in ch] for ch in x[0]]]}
    else:
        body = {"inputs": [{"name": "x", "shape": [1] + shape, "datatype": "FP32",
                            "data": [round(float(v), 6) for v in x.ravel()]}]}
    with open(path, "w") as f:
        json.dump(body, f)
    return {"Content-Type": "application/json"}


def poisson_script(path, body_file, headers, mean_delay_ms):
    """wrk script: POST body_file after an exponentially distributed wait (mean ms)."""
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n'
                + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
                + f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
                "local seeded = false\n"
                "function delay()\n"
                "  if not seeded then math.randomseed(os.time() + os.clock() * 1e6); seeded = true end\n"
                f"  return -math.log(1 - math.random()) * {mean_delay_ms:.4f}\n"
                "end\n")
    return path


def wrk(script, url, connections, duration):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
           "--latency", "--timeout", "30s", "-s", script, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 90).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(m.group(1)) if m else 0.0, "requests": int(total.group(1)) if total else 0,
            "p50": bench_server.to_ms("50%", out), "p99": bench_server.to_ms("99%", out),
            "non2xx": int(bad.group(1)) if bad else 0,
            "errors": sum(int(g) for g in errors.groups()) if errors else 0}


def stable_wrk(script, url, connections, duration, max_windows):
    """perf_analyzer's rule: repeat windows until the last 3 are within 10% of their mean
    req/s (max_windows 1: one window, unchecked). Returns the last windows' medians."""
    windows = []
    while True:
        windows.append(wrk(script, url, connections, duration))
        last = windows[-3:]
        if len(windows) >= max_windows:
            break
        if len(last) == 3:
            mean = statistics.mean(w["rps"] for w in last)
            if mean and all(abs(w["rps"] - mean) <= 0.1 * mean for w in last):
                break
    last = windows[-3:]
    stable = len(last) == 3 and all(
        abs(w["rps"] - statistics.mean(x["rps"] for x in last)) <= 0.1 * statistics.mean(x["rps"] for x in last)
        for w in last)
    return {"rps": statistics.median(w["rps"] for w in last),
            "p50": statistics.median(w["p50"] for w in last),
            "p99": statistics.median(w["p99"] for w in last),
            "non2xx": sum(w["non2xx"] for w in last), "errors": sum(w["errors"] for w in last),
            "windows": len(windows), "stable": stable}


def open_loop(url, body_file, headers, rate, duration):
    """open_loop.py on the client's CPU: true open-loop Poisson arrivals."""
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, os.path.join(HERE, "open_loop.py"), url,
           body_file, str(rate), str(duration)] + [f"--header={k}:{v}" for k, v in headers.items()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode:
        raise RuntimeError(f"open_loop.py failed: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def kept_rate(achieved, rate, window_s):
    """>= 85% of the asked rate achieved, judged only where the window holds enough
    arrivals for it to mean something (100 expected; resnet18's slow rates have fewer)."""
    return achieved >= 0.85 * rate or rate * window_s < 100


def rate_point(tmp, body_file, headers, url, rate, slo_ms, duration):
    if slo_ms >= OPEN_LOOP_SLO_MS:
        r = open_loop(url, body_file, headers, rate, duration)
        r.update(target=rate, connections="open loop", ok=(
            r["p99"] <= slo_ms and not r["non2xx"] and not r["errors"] and r["requests"]))
        return r
    connections = max(8, min(512, math.ceil(rate * slo_ms / 1000 * 10)))
    script = poisson_script(os.path.join(tmp, "poisson.lua"), body_file, headers,
                            1000.0 * connections / rate)
    r = wrk(script, url, connections, duration)
    keeps_up = kept_rate(r["rps"], rate, duration)
    r.update(target=rate, connections=connections,
             ok=(r["p99"] <= slo_ms and not r["non2xx"] and not r["errors"] and r["requests"]
                 and keeps_up))
    return r


# ---------------------------------------------------------------- perf_analyzer

def perf_analyzer_data(shape, path):
    """perf_analyzer's --input-data file: the same one row every other load sends."""
    x = bench_server.request_input(shape)
    with open(path, "w") as f:
        json.dump({"data": [{"x": {"content": [round(float(v), 6) for v in x.ravel()],
                                   "shape": list(shape)}}]}, f)
    return path


def triton_config(shape, path):
    """What perf_analyzer reads before it sends anything: the model's metadata (its inputs'
    names, types and shapes) and Triton's model configuration (GET /v2/models/m/config).
    berth serves both itself; the MLServer and KServe adapters are given this file to serve
    them (neither server has Triton's model-configuration extension)."""
    with open(path, "w") as f:
        json.dump({"metadata": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1] + shape}],
                                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1]}]},
                   "config": {"name": "m", "max_batch_size": 64,
                              "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": shape}],
                              "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [-1]}]}}, f)
    return path


def perf_analyzer(port, data, binary, mode, window_s, max_windows):
    """One perf_analyzer run on the client's CPU over HTTP, with JSON tensors both ways (the
    body every system gets from wrk) or binary ones, mode being --concurrency-range N or a
    Poisson --request-rate-range.
    Its own stability rule: windows of window_s until the last 3 have throughput and p99
    within 10% (at least 3 windows, at most max_windows). Returns its figures over those
    windows, or, where they never settled, the median of the last 3 windows (p50 unknown)."""
    cmd = ["taskset", "-c", CLIENT_CPU, PERF_ANALYZER, "-m", "m", "-u", f"127.0.0.1:{port}",
           "-i", "http", "--input-data", data]
    cmd += [] if binary else ["--input-tensor-format", "json", "--output-tensor-format", "json"]
    cmd += ["--measurement-interval", str(int(window_s * 1000)),
           "--max-trials", str(max(3, max_windows)), "--stability-percentage", "10",
           "--percentile", "99", "--max-threads", "16", "-v", *mode]
    try:  # capped at 4 GiB: a run whose windows never close keeps every timestamp
        done = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=60 + 3 * window_s * max(3, max_windows),
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)))
        out = done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace") \
            + f"\nerror: perf_analyzer did not finish within {e.timeout:.0f} s"
    passes = [(float(t), int(us) / 1000) for t, us in
              re.findall(r"Pass \[\d+\] throughput: ([0-9.]+) infer/sec\. p99 latency: (\d+) usec", out)]
    errors = re.findall(r"(?:Thread \[\d+\] had error|error): .*", out)
    failed = len(errors)
    stable = "Failed to obtain stable measurement" not in out
    final = re.search(r"Client: \n    Request count: (\d+)\n    Throughput: ([0-9.]+) infer/sec\n"
                      r"(?:.*\n)*?    p50 latency: (\d+) usec\n(?:.*\n)*?    p99 latency: (\d+) usec", out)
    if stable and final and not failed:
        r = {"rps": float(final.group(2)), "requests": int(final.group(1)),
             "p50": int(final.group(3)) / 1000, "p99": int(final.group(4)) / 1000}
    else:
        last = passes[-3:]
        r = {"rps": statistics.median(t for t, _ in last) if last else 0.0,
             "p99": statistics.median(p for _, p in last) if last else float("inf"),
             "p50": float("nan"), "requests": 0}
    r.update(non2xx=0, errors=failed or (0 if passes else 1), windows=len(passes), stable=stable,
             kept_up="Failed to maintain requested inference load" not in out)
    if errors or not passes:
        r["why"] = sorted(set(errors))[:3] or out.strip()[-300:]
    return r


def perf_analyzer_rate_point(port, data, binary, rate, slo_ms, window_s, max_windows):
    """A rate passes with p99 <= SLO, no failed request, and the rate kept: perf_analyzer
    did not say it fell behind, and achieved >= 85% of it (judged where 100+ arrivals are
    expected). Windows that never settled are judged on the median of the last 3."""
    mode = ["--request-rate-range", f"{rate:.1f}", "--request-distribution", "poisson"]
    r = perf_analyzer(port, data, binary, mode, window_s, max_windows)
    keeps_up = r["kept_up"] and kept_rate(r["rps"], rate, window_s)
    r.update(target=rate, connections="perf_analyzer",
             ok=bool(r["p99"] <= slo_ms and not r["errors"] and r["windows"] and keeps_up))
    return r


def rate_search(point, closed_loop_max, steps, settle_first):
    """The highest asked rate that passes, searched from 0.6x the best closed-loop
    throughput: down by 4x while nothing has passed, then bisection between the highest
    pass and the lowest failure (1.2x the closed-loop best at first). point(rate) measures
    one rate. Returns (the asked rate of the best pass, as perf_analyzer's request-rate
    mode reports it, or 0 when none passed; every point tried, with the rate achieved)."""
    lo, hi, best, points = 0.0, 1.2 * closed_loop_max, 0.0, []
    rate = 0.6 * closed_loop_max
    for _ in range(steps):
        if rate < 0.5:
            break
        settle_first()
        p = point(rate)
        points.append(p)
        log(f"    rate {rate:9.1f}/s -> {p['rps']:9.1f}/s p99 {p['p99']:8.2f} ms "
            f"(c={p['connections']}) {'ok' if p['ok'] else 'over'}")
        if p["ok"]:
            lo, best = rate, max(best, rate)
        else:
            hi = rate
        rate = (lo + hi) / 2 if lo else rate / 4
    return best, points


def rate_cell(runs):
    """The median max rate over rounds; where no rate passed, '< the lowest rate tried'."""
    rates = [r["max_rate"] for r in runs]
    if any(rates):
        return f"{med(rates):,.1f}"
    tried = [p["target"] for r in runs for p in r["rate_points"]]
    return f"none (< {min(tried):,.1f})" if tried else "none"


# ---------------------------------------------------------------- processes

def tree(root_pid):
    """The pids of root_pid's session and descendants (Ray and TorchServe fork daemons)."""
    parent, session = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)], session[int(d)] = int(fields[1]), int(fields[3])
    pids = {p for p, s in session.items() if s == root_pid} | {root_pid}
    grew = True
    while grew:
        new = {p for p, pp in parent.items() if pp in pids} - pids
        pids |= new
        grew = bool(new)
    return [p for p in pids if p in parent]


def tree_peak_rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def start_time(pid):
    """The process's start time in clock ticks (with its pid, an identity that survives
    pid reuse), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def stop(proc):
    """SIGTERM to the server's process group, then SIGKILL to whatever of the tree seen
    before it is still there (the same processes: pid and start time)."""
    started = {pid: start_time(pid) for pid in tree(proc.pid)}
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(0.5)
    for pid, when in started.items():  # what outlived the group's SIGTERM
        if when is None or start_time(pid) != when:
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def wait_ready(proc, ready_url, url, body, headers, timeout):
    """Seconds from now until the server is ready: its readiness endpoint (ready_url, if
    it has one) answers 200 and then the real request does too (None if that never
    happens). Both, since a server may answer requests before it says it is ready (berth
    serve does, while it warms up) or say ready before its model has loaded."""
    start = time.time()
    for target, data in ([(ready_url, None)] if ready_url else []) + [(url, body)]:
        if not poll_200(proc, target, data, headers, timeout - (time.time() - start)):
            return None
    return time.time() - start


def poll_200(proc, url, body, headers, timeout):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            return False
        try:
            req = urllib.request.Request(url, data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as r:
                if r.status == 200:
                    r.read()
                    return True
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.01)  # the cold start's resolution: berth's is ~0.5 s
    return False


def one_request_ms(url, body, headers):
    start = time.time()
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
    except (OSError, urllib.error.HTTPError):
        return float("inf")
    return 1000 * (time.time() - start)


def settle(url, body, headers, base_ms, limit_s=60):
    """Waits until the server has worked off what the last run left queued (wrk closes its
    connections, but servers finish what they have read): until one request alone takes
    at most twice its idle time (+5 ms)."""
    deadline = time.time() + limit_s
    while time.time() < deadline and one_request_ms(url, body, headers) > 2 * base_ms + 5:
        pass


# ---------------------------------------------------------------- one run

def measure(name, spec, py, model_name, model_path, tmp, args, floor_exe):
    port = PORT
    url = f"http://127.0.0.1:{port}{spec['url']}"
    body_file = os.path.join(tmp, f"{model_name}-{spec['body']}.body")
    with open(body_file, "rb") as f:
        body = f.read()
    headers = args.headers[(model_name, spec["body"])]
    script = bench_server.wrk_script(os.path.join(tmp, f"{name}-{model_name}.lua"), body_file,
                                     headers)
    logfile = open(os.path.join(args.logs, f"{name}-{model_name}.log"), "a")
    config = os.path.join(tmp, f"{model_name}-triton.json") if args.load == "perf_analyzer" else None
    cmd = ["taskset", "-c", SERVER_CPU] + server_command(name, py, model_path, port, floor_exe, config)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=logfile, stderr=subprocess.STDOUT,
                            start_new_session=True)
    result = {"system": name, "model": model_name}
    try:
        ready_url = f"http://127.0.0.1:{port}{spec['ready']}" if spec.get("ready") else None
        ready = wait_ready(proc, ready_url, url, body, headers, args.start_timeout)
        if ready is None:
            result["error"] = (f"not ready (readiness, then a 200 from {spec['url']}) within "
                               f"{args.start_timeout} s "
                               f"(exit {proc.poll()}); see {logfile.name}")
            return result
        result["cold_start_s"] = time.time() - t0
        wrk(script, url, 4, args.warmup)
        base_ms = min(one_request_ms(url, body, headers) for _ in range(3))
        window, rate_window = args.duration[model_name], args.rate_duration[model_name]
        slo = SLO_MS[model_name]
        if args.load == "perf_analyzer":
            data = os.path.join(tmp, f"{model_name}-perf_analyzer.json")
            binary = spec["body"] == "binary"

            def closed(c):
                return perf_analyzer(port, data, binary, ["--concurrency-range", str(c)], window,
                                     args.max_windows)

            def point(rate):
                return perf_analyzer_rate_point(port, data, binary, rate, slo, rate_window,
                                                args.max_windows)
        else:
            def closed(c):
                return stable_wrk(script, url, c, window, args.max_windows)

            def point(rate):
                return rate_point(tmp, body_file, headers, url, rate, slo, rate_window)
        result["concurrency"] = {}
        for c in args.connections[model_name]:
            settle(url, body, headers, base_ms)
            r = closed(c)
            result["concurrency"][c] = r
            log(f"  {name:10} {model_name:8} c={c:<3} {r['rps']:9.1f} req/s  p50 {r['p50']:8.2f} ms  "
                f"p99 {r['p99']:8.2f} ms  non-2xx {r['non2xx']} errors {r['errors']}"
                + ("" if r["stable"] or args.max_windows == 1 else "  (not stable)"))
        best_closed = max(r["rps"] for r in result["concurrency"].values())
        best, points = rate_search(point, best_closed, args.rate_steps[model_name],
                                   lambda: settle(url, body, headers, base_ms))
        result["max_rate"], result["rate_points"] = best, points
        result["peak_rss_mb"] = tree_peak_rss_mb(tree(proc.pid))
        result["processes"] = len(tree(proc.pid))
        log(f"  {name:10} {model_name:8} max rate @ p99<={SLO_MS[model_name]:g} ms: {best:.1f}/s, "
            f"cold start {result['cold_start_s']:.2f} s, peak RSS {result['peak_rss_mb']:.0f} MB "
            f"({result['processes']} processes)")
        return result
    finally:
        stop(proc)
        logfile.close()
        result["threads"] = threads_logged(logfile.name)
        time.sleep(1)


def threads_logged(path):
    """What the server said about its threads: berth's start-up line, the adapters' line."""
    with open(path, errors="replace") as f:
        text = f.read()
    m = re.search(r"libtorch threads \d+, http threads \d+", text) or \
        re.search(r"\d+ intra-op threads", text)
    return m.group(0) if m else ""


# ---------------------------------------------------------------- report

def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else float("nan")


def report(results, systems, models, args, versions, failures):
    lines = []
    out = lines.append
    out(f"mode: {'quick' if args.quick else 'full'}, {args.rounds} round(s); load: {args.load}; "
        f"seconds per window {args.duration}, per rate point "
        f"{args.rate_duration}{' (per window)' if args.load == 'perf_analyzer' else ''}; "
        f"connections {args.connections}; server on CPU {SERVER_CPU}, {args.load} on CPU {CLIENT_CPU}")
    out("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    threads = {}
    for r in results:
        if r.get("threads"):
            threads.setdefault(SYSTEMS[r["system"]]["label"], r["threads"])
    out("threads (as logged; the server had one CPU): "
        + ", ".join(f"{k}: {v}" for k, v in threads.items()))
    for name, why in failures.items():
        out(f"NOT MEASURED {name}: {why}")
    for model in models:
        out(f"\n### {model} (SLO p99 <= {SLO_MS[model]:g} ms)\n")
        out("| system | conns | req/s (median) | p50 ms | p99 ms | non-2xx + errors | req/s each round |")
        out("|---|---:|---:|---:|---:|---:|---|")
        for name in systems:
            runs = [r for r in results if r["system"] == name and r["model"] == model and "concurrency" in r]
            for c in args.connections[model]:
                rows = [r["concurrency"][c] for r in runs if c in r["concurrency"]]
                if not rows:
                    continue
                out(f"| {SYSTEMS[name]['label']} | {c} | {med(x['rps'] for x in rows):,.1f} | "
                    f"{med(x['p50'] for x in rows):.2f} | {med(x['p99'] for x in rows):.2f} | "
                    f"{sum(x['non2xx'] + x['errors'] for x in rows)} | "
                    + ", ".join(f"{x['rps']:,.1f}" for x in rows) + " |")
        out("")
        out("| system | max Poisson rate at SLO (median) | cold start s | peak RSS MB (tree) | processes | each round (rate; cold s; RSS MB) |")
        out("|---|---:|---:|---:|---:|---|")
        for name in systems:
            runs = [r for r in results if r["system"] == name and r["model"] == model]
            good = [r for r in runs if "max_rate" in r]
            if not good:
                errs = "; ".join(r.get("error", "") for r in runs)
                out(f"| {SYSTEMS[name]['label']} | failed: {errs} | | | | |")
                continue
            out(f"| {SYSTEMS[name]['label']} | {rate_cell(good)} | "
                f"{med(r['cold_start_s'] for r in good):.2f} | {med(r['peak_rss_mb'] for r in good):.0f} | "
                f"{max(r['processes'] for r in good)} | "
                + "; ".join(f"{r['max_rate']:,.1f}, {r['cold_start_s']:.2f}, {r['peak_rss_mb']:.0f}"
                            for r in good) + " |")
        ratios = ratio_lines(results, systems, model)
        if ratios:
            out("")
            lines.extend(ratios)
    return "\n".join(lines)


def ratio_lines(results, systems, model):
    def figure(name, key):
        return med(r[key] for r in results if r["system"] == name and r["model"] == model and key in r)
    # the peers sent the same JSON as berth (the binary rows are compared with each other)
    peers = [n for n in systems if n not in ("berth", "floor") + NOT_BY_DEFAULT
             and not math.isnan(figure(n, "max_rate"))]
    if "berth" not in systems or math.isnan(figure("berth", "max_rate")):
        return []
    lines = []
    if peers:
        best = max(peers, key=lambda n: figure(n, "max_rate"))
        fastest = min(peers, key=lambda n: figure(n, "cold_start_s"))
        leanest = min(peers, key=lambda n: figure(n, "peak_rss_mb"))
        if figure(best, "max_rate") > 0:
            lines.append(f"- max rate at SLO: berth / best peer ({SYSTEMS[best]['label']}) = "
                         f"{figure('berth', 'max_rate') / figure(best, 'max_rate'):.2f}x")
        else:
            lines.append(f"- max rate at SLO: berth {figure('berth', 'max_rate'):,.1f}/s; no peer met "
                         "the SLO at any rate tried (no ratio)")
        lines.append(f"- cold start: berth / fastest peer ({SYSTEMS[fastest]['label']}) = "
                     f"{figure('berth', 'cold_start_s') / figure(fastest, 'cold_start_s'):.2f}x")
        lines.append(f"- peak RSS: berth / leanest peer ({SYSTEMS[leanest]['label']}) = "
                     f"{figure('berth', 'peak_rss_mb') / figure(leanest, 'peak_rss_mb'):.2f}x")
    b, k = figure("berth-binary", "max_rate"), figure("kserve-binary", "max_rate")
    if not (math.isnan(b) or math.isnan(k)):
        lines.append(f"- binary tensors, max rate at SLO: berth {b:,.1f}/s, KServe {k:,.1f}/s"
                     + (f" ({b / k:.2f}x)" if k > 0 else ""))
    if "floor" in systems and model == "mlp":
        for c in (16, 64):
            b = med(r["concurrency"][c]["rps"] for r in results
                    if r["system"] == "berth" and r["model"] == model and c in r.get("concurrency", {}))
            f = med(r["concurrency"][c]["rps"] for r in results
                    if r["system"] == "floor" and r["model"] == model and c in r.get("concurrency", {}))
            if not (math.isnan(b) or math.isnan(f)):
                lines.append(f"- berth / HTTP floor at {c} connections: {b / f:.2f}x")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 round, 2 s windows, no stability rule, 4 bisection steps "
                             "(a few minutes; the full run takes far longer)")
    parser.add_argument("--systems", default=",".join(s for s in ORDER if s not in NOT_BY_DEFAULT))
    parser.add_argument("--models", default="mlp,resnet18")
    parser.add_argument("--load", choices=("wrk", "perf_analyzer"), default="wrk",
                        help="wrk for every system (default), or Triton's perf_analyzer, for "
                             "these Open Inference Protocol systems: "
                             + ", ".join(PERF_ANALYZER_SYSTEMS) + " (make perf-analyzer)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--duration", type=int, help="seconds per wrk window")
    parser.add_argument("--rate-steps", type=int,
                        help="points the max-rate search tries (quick: MLP 4, resnet18 3)")
    parser.add_argument("--rate-duration", type=int,
                        help="seconds per max-rate point (quick: MLP 3, resnet18 5)")
    parser.add_argument("--berth-python", default=sys.executable,
                        help="the python whose berth is measured (default: this one)")
    parser.add_argument("--venv-python", default=shutil.which("python3.11") or sys.executable,
                        help="the python the peers' venvs are made from")
    parser.add_argument("--start-timeout", type=float, default=180)
    parser.add_argument("--out", default=os.path.join(BUILD, "results"))
    args = parser.parse_args()
    q = args.quick
    args.rounds = args.rounds or (1 if q else 3)
    # resnet18's requests take ~0.1 s alone on one CPU, so its windows are longer; in
    # quick mode it skips 64 connections (about 7 s per answer there: a window long enough
    # for that does not fit in a quick run).
    args.duration = {"mlp": args.duration or (2 if q else 10),
                     "resnet18": args.duration or (4 if q else 30)}
    args.warmup = 1 if q else 3
    args.max_windows = 1 if q else 6
    args.rate_steps = {"mlp": args.rate_steps or (4 if q else 7),
                       "resnet18": args.rate_steps or (3 if q else 6)}
    args.rate_duration = {"mlp": args.rate_duration or (3 if q else 15),
                          "resnet18": args.rate_duration or (5 if q else 30)}
    args.connections = {"mlp": [1, 4, 16, 64], "resnet18": [1, 4, 16] if q else [1, 4, 16, 64]}
    if args.load == "perf_analyzer":
        # In synchronous mode perf_analyzer runs a thread per concurrent request; 64 of them on
        # its one CPU starve the thread that closes its windows, and none closes (its
        # asynchronous HTTP mode fails with "Unexpected error: received CURLMsg").
        args.connections = {m: [c for c in cs if c <= 16] for m, cs in args.connections.items()}
    systems = [s for s in ORDER if s in args.systems.split(",")]
    models = args.models.split(",")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    args.logs = os.path.join(args.out, stamp)
    os.makedirs(args.logs, exist_ok=True)

    pythons, versions, failures = {}, {}, {}
    versions["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0]
    if args.load == "perf_analyzer":
        if not os.path.exists(PERF_ANALYZER):
            parser.error(f"--load perf_analyzer: {PERF_ANALYZER} is missing (run make perf-analyzer)")
        versions["perf_analyzer"] = subprocess.run([PERF_ANALYZER, "--version"], capture_output=True,
                                                   text=True).stderr.split("Version ")[-1].split()[0]
        for name in systems:
            if name not in PERF_ANALYZER_SYSTEMS:
                failures[name] = PERF_ANALYZER_CANNOT.get(name, "--load perf_analyzer drives only "
                                                          + ", ".join(PERF_ANALYZER_SYSTEMS))
    for name in [s for s in systems if s not in failures]:
        spec = SYSTEMS[name]
        try:
            if spec.get("apt"):
                apt_install(spec["apt"])
            if spec.get("serve_as", name) in ("berth", "berth-nt"):
                pythons[name] = args.berth_python
                versions["berth"] = version_of(args.berth_python, "berth")
                versions["torch"] = version_of(args.berth_python, "torch")
            elif name == "floor":
                pythons[name] = build_floor()
                versions["libmicrohttpd"] = subprocess.run(
                    ["pkg-config", "--modversion", "libmicrohttpd"], capture_output=True, text=True).stdout.strip()
            else:
                pythons[name] = ensure_venv(spec["venv"], args.venv_python)
                dist = spec.get("dist", spec["venv"])
                versions[dist] = version_of(pythons[name], dist)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            failures[name] = str(e)
            log(f"{name}: not measured: {e}")
    systems = [s for s in systems if s not in failures]

    results, args.headers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = bench_server.make_models(tmp, pt2=any(SYSTEMS[s].get("file") == "pt2" for s in systems))
        for model_name in models:
            path, shape = paths[model_name]
            for kind in ("v2", "bentoml", "binary"):
                args.headers[(model_name, kind)] = write_body(
                    kind, shape, os.path.join(tmp, f"{model_name}-{kind}.body"))
            perf_analyzer_data(shape, os.path.join(tmp, f"{model_name}-perf_analyzer.json"))
            triton_config(shape, os.path.join(tmp, f"{model_name}-triton.json"))
            for rnd in range(args.rounds):
                order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
                log(f"{model_name} round {rnd + 1}/{args.rounds}: {', '.join(order)}")
                for name in order:
                    file = paths[model_name + ".pt2"][0] if SYSTEMS[name].get("file") == "pt2" else path
                    r = measure(name, SYSTEMS[name], pythons[name], model_name, file, tmp, args,
                                pythons["floor"] if name == "floor" else None)
                    r["round"] = rnd + 1
                    if "error" in r:
                        log(f"  {name}: {r['error']}")
                    results.append(r)
                    with open(os.path.join(args.logs, "results.json"), "w") as f:
                        json.dump({"versions": versions, "failures": failures, "results": results}, f,
                                  indent=1, default=str)
    text = report(results, systems, models, args, versions, failures)
    with open(os.path.join(args.logs, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    log(f"raw results and server logs: {args.logs}")


if __name__ == "__main__":
    main()
