"""Serving benchmark: `python -m berth serve` against the hand-written Flask and FastAPI
apps in benchmarks/baselines/, driven by wrk at 1, 16 and 64 connections, in one run.

For each model (the seed MLP 10 -> 128 -> 64 -> 1 and resnet18) every server is started
in turn, waited on until ready, given a short untimed warm-up, then measured at each
connection count with the same Open Inference Protocol v2 JSON request (1 row). Reported:
requests/s, p50 and p99 latency, non-2xx answers, and the server's peak RSS. berth is also
measured with the same input sent through the binary tensor data extension, as Triton's and
KServe's clients send tensors (the hand-written apps speak JSON only).

    .venv/bin/python benchmarks/bench_server.py [--duration 5] [--models mlp,resnet18]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PORT = 18470


def make_models(directory, pt2=False):
    """Saves the seed MLP and resnet18 (random weights) with berth.json signatures:
    name -> (path, shape of one row). With ``pt2``, also "<name>.pt2" -> the same module
    exported by berth.export (torch.export + AOTInductor; tens of seconds each)."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import models  # tests/models.py: resnet18 from torch.nn; PyPI's torchvision does not import

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()
    resnet = models.resnet18().eval()
    models = {}
    for name, module, shape in (("mlp", mlp, [10]), ("resnet18", resnet, [3, 224, 224])):
        meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1] + shape}],
                "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, -1]}]}
        path = os.path.join(directory, f"{name}.pt")
        torch.jit.save(torch.jit.script(module), path, _extra_files={"berth.json": json.dumps(meta)})
        models[name] = (path, shape)
        if pt2:
            import berth
            example = torch.zeros([2] + shape)
            models[name + ".pt2"] = (berth.export(module, example, os.path.join(directory, f"{name}.pt2"),
                                                  input_names=["x"], output_names=["y"]), shape)
    return models


def request_input(shape):
    import numpy as np
    return np.random.default_rng(0).standard_normal([1] + shape).astype(np.float32)


def request_body(shape):
    x = request_input(shape)
    return json.dumps({"inputs": [{"name": "x", "shape": [1] + shape, "datatype": "FP32",
                                   "data": [round(float(v), 6) for v in x.ravel()]}]})


def binary_request(shape):
    """The same input with the binary tensor data extension: (body bytes, JSON header length)."""
    x = request_input(shape)
    header = json.dumps({"inputs": [{"name": "x", "shape": [1] + shape, "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes(), len(header)


def wrk_script(path, body_file, headers):
    """A wrk Lua script that POSTs the bytes of body_file with the given headers."""
    lines = ['wrk.method = "POST"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    lines += [f'local f = io.open("{body_file}", "rb")', 'wrk.body = f:read("*a")', "f:close()"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def server_command(kind, model_path, berth_args=()):
    if kind == "berth serve":
        return [sys.executable, "-m", "berth", "serve", model_path, "--host", "127.0.0.1",
                "--port", str(PORT), "--name", "m", *berth_args]
    script = {"flask (hand-written)": "flask_app.py", "fastapi (hand-written)": "fastapi_app.py"}[kind]
    return [sys.executable, os.path.join(HERE, "baselines", script), model_path, str(PORT)]


def wait_ready(proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def to_ms(pattern, out):
    """The latency after pattern in wrk's output, in ms (nan when wrk printed none)."""
    m = re.search(pattern + r"\s+([0-9.]+)(us|ms|s|m)\b", out)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def run_wrk(script, connections, duration):
    threads = 1 if connections == 1 else 2
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
                          "--timeout", "60s",
                          "-s", script, f"http://127.0.0.1:{PORT}/v2/models/m/infer"],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = to_ms("50%", out)
    p99 = to_ms("99%", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return rps, p50, p99, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


def medians(rows):
    """One row per (model, server, connections): median req/s, p50 and p99 over the
    rounds, non-2xx summed, the largest peak RSS, and each round's req/s."""
    import statistics
    groups = {}
    for model_name, kind, c, rps, p50, p99, bad, _, rss in rows:
        groups.setdefault((model_name, kind, c), []).append((rps, p50, p99, bad, rss))
    out = []
    for (model_name, kind, c), runs in groups.items():
        out.append((model_name, kind, c, statistics.median(r[0] for r in runs),
                    statistics.median(r[1] for r in runs), statistics.median(r[2] for r in runs),
                    sum(r[3] for r in runs), max(r[4] for r in runs), [r[0] for r in runs]))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--models", default="mlp,resnet18")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--servers", default="berth,fastapi,flask")
    parser.add_argument("--berth-args", default="", help="extra arguments for berth serve")
    parser.add_argument("--rounds", type=int, default=1,
                        help="start and measure every server this many times, in turn; report "
                             "medians (this shared machine's figures wander by a third)")
    parser.add_argument("--binary", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure berth with the binary tensor data extension "
                             "(the hand-written apps speak JSON only)")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    kinds = [k for k in ("berth serve", "fastapi (hand-written)", "flask (hand-written)")
             if k.split()[0] in args.servers.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(tmp)
        for model_name in args.models.split(","):
            path, shape = models[model_name]
            body_file = os.path.join(tmp, f"{model_name}.json")
            with open(body_file, "w") as f:
                f.write(request_body(shape))
            script = wrk_script(os.path.join(tmp, f"{model_name}.lua"), body_file,
                                {"Content-Type": "application/json"})
            body, header_len = binary_request(shape)
            with open(body_file + ".bin", "wb") as f:
                f.write(body)
            binary_script = wrk_script(os.path.join(tmp, f"{model_name}-binary.lua"),
                                       body_file + ".bin",
                                       {"Content-Type": "application/octet-stream",
                                        "Inference-Header-Content-Length": header_len})
            for kind in [k for _ in range(args.rounds) for k in kinds]:
                proc = subprocess.Popen(server_command(kind, path, args.berth_args.split()), cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                runs = [(kind, script)]
                if kind == "berth serve" and args.binary:
                    runs.append(("berth serve (binary)", binary_script))
                try:
                    wait_ready(proc, timeout=600)
                    run_wrk(script, 4, 2)  # untimed warm-up
                    for label, run_script in runs:
                        for c in connections:
                            rps, p50, p99, bad, errors = run_wrk(run_script, c, args.duration)
                            rows.append((model_name, label, c, rps, p50, p99, bad, errors,
                                         peak_rss_mb(proc.pid)))
                            print(f"{model_name:9} {label:24} c={c:<3} {rps:9.0f} req/s  p50 "
                                  f"{p50:8.2f} ms  p99 {p99:8.2f} ms  non-2xx {bad}  {errors}",
                                  file=sys.stderr, flush=True)
                finally:
                    proc.terminate()
                    proc.wait(60)
                time.sleep(1)
    rows = medians(rows)
    rounds = f" (median of {args.rounds} rounds)" if args.rounds > 1 else ""
    print(f"\n| model | server | conns | req/s{rounds} | p50 ms | p99 ms | non-2xx | peak RSS MB |"
          + (" req/s each round |" if args.rounds > 1 else ""))
    print("|---|---|---:|---:|---:|---:|---:|---:|" + ("---|" if args.rounds > 1 else ""))
    for model_name, kind, c, rps, p50, p99, bad, rss, each in rows:
        print(f"| {model_name} | {kind} | {c} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {bad} | {rss:.0f} |"
              + (" " + ", ".join(f"{r:,.0f}" for r in each) + " |" if args.rounds > 1 else ""))
    print()
    for model_name in args.models.split(","):
        for c in connections:
            by_kind = {k: (rps, p99) for m, k, cc, rps, _, p99, *_ in rows if m == model_name and cc == c}
            if not {"berth serve", "fastapi (hand-written)", "flask (hand-written)"} <= set(by_kind):
                continue
            base, base_p99 = by_kind["fastapi (hand-written)"]
            ours, our_p99 = by_kind["berth serve"]
            flask, _ = by_kind["flask (hand-written)"]
            print(f"{model_name} c={c}: berth/fastapi {ours / base:.2f}x throughput "
                  f"(p99 {our_p99:.2f} vs {base_p99:.2f} ms), berth/flask {ours / flask:.2f}x")


if __name__ == "__main__":
    main()
