"""berth's C core vs the torch path users write by hand, in the same process.

    .venv/bin/python benchmarks/bench_core.py [--quick]

For the seed MLP (10 -> 128 -> 64 -> 1) and resnet18 (random weights, 64x64 images),
at batch 1, 64 and 1024: median per-call latency of

  berth   berth.load(path).predict(x)
  torch   torch.jit.load(path) + torch.from_numpy(x) + forward + .numpy()  (inference_mode)

measured interleaved (one call of each in turn), and their ratio. Then the same for
berth.load(path, optimize=True) (frozen, optimize_for_inference: what `berth serve` runs)
on resnet18 with 224x224 images at batch 1 and 8, against the same torch path. Then cold
start (process start to first prediction) and peak RSS of a fresh process doing each,
median of 5 runs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import berth  # noqa: E402
import models  # noqa: E402  (tests/models.py: resnet18 from torch.nn; PyPI's torchvision does not import)


def save_models(directory):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()
    meta = {"berth_format": 1, "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 10]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}]}
    paths = {"mlp": os.path.join(directory, "mlp.pt"), "resnet18": os.path.join(directory, "resnet18.pt")}
    torch.jit.save(torch.jit.script(mlp), paths["mlp"], _extra_files={"berth.json": json.dumps(meta)})
    torch.jit.save(torch.jit.script(models.resnet18().eval()), paths["resnet18"])
    return paths


def feature_shape(name):
    return (10,) if name == "mlp" else (3, 64, 64)


def time_pair(berth_model, torch_model, x, calls):
    """Interleaved per-call seconds for berth and the torch path; returns two lists."""
    b_times, t_times = [], []
    clock = time.perf_counter
    with torch.inference_mode():
        for _ in range(calls):
            t0 = clock()
            berth_model.predict(x)
            t1 = clock()
            torch_model(torch.from_numpy(x)).numpy()
            t2 = clock()
            b_times.append(t1 - t0)
            t_times.append(t2 - t1)
    return b_times, t_times


def latency(paths, quick):
    rows = []
    rng = np.random.default_rng(0)
    for name, path in paths.items():
        b_model, t_model = berth.load(path), torch.jit.load(path).eval()
        for batch in (1, 64, 1024):
            x = rng.standard_normal((batch,) + feature_shape(name)).astype(np.float32)
            if name == "mlp":
                calls = {1: 20000, 64: 5000, 1024: 1000}[batch]
            else:
                calls = {1: 100, 64: 10, 1024: 3}[batch]
            if quick:
                calls = max(3, calls // 10)
            time_pair(b_model, t_model, x, max(2, calls // 10))  # warm-up (TorchScript profiles early calls)
            b, t = time_pair(b_model, t_model, x, calls)
            bm, tm = statistics.median(b), statistics.median(t)
            rows.append((name, batch, calls, bm, tm, bm / tm))
    return rows


def optimized(path, quick):
    """resnet18 at 224x224: berth.load(optimize=True) against the torch path as saved."""
    rows = []
    rng = np.random.default_rng(1)
    b_model, t_model = berth.load(path, optimize=True), torch.jit.load(path).eval()
    for batch, calls in ((1, 60), (8, 12)):
        calls = max(3, calls // 10) if quick else calls
        x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        time_pair(b_model, t_model, x, 3)
        b, t = time_pair(b_model, t_model, x, calls)
        bm, tm = statistics.median(b), statistics.median(t)
        rows.append(("resnet18", batch, calls, bm, tm, bm / tm))
    return rows


# Each child prints its own peak RSS (VmHWM): rusage of a forked child would count the
# parent's pages it inherited before exec.
CHILD = {
    "berth": "import berth, numpy as np\nm = berth.load(P)\nm.predict(np.ones((1, 10), np.float32))",
    "torch": ("import torch, numpy as np\nm = torch.jit.load(P)\nwith torch.inference_mode():\n"
              "    m(torch.from_numpy(np.ones((1, 10), np.float32))).numpy()"),
}


def cold_start(path, runs, children=None):
    """Median seconds from spawning the process to its first prediction, and peak RSS
    (MiB), for each of ``children`` ({name: code loading P and predicting}; CHILD)."""
    children = children or CHILD
    results = {k: ([], []) for k in children}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for _ in range(runs):
        for kind, body in children.items():
            code = (f"import time\nP = {path!r}\n{body}\nt = time.time()\n"
                    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
                    "print(t, hwm)")
            start = time.time()
            out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env, check=True).stdout
            done, hwm_kib = out.decode().split()[-2:]
            results[kind][0].append(float(done) - start)
            results[kind][1].append(int(hwm_kib) / 1024)
    return {k: (statistics.median(s), statistics.median(r)) for k, (s, r) in results.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls (a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        paths = save_models(d)
        rows = latency(paths, args.quick)  # berth sets libtorch's threads once, for both paths
        print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads (shared by both paths)")
        print(f"{'model':10} {'batch':>5} {'calls':>6} {'berth':>12} {'torch path':>12} {'ratio':>6}")
        for name, batch, calls, bm, tm, ratio in rows:
            print(f"{name:10} {batch:5d} {calls:6d} {bm * 1e6:10.1f}us {tm * 1e6:10.1f}us {ratio:6.3f}")
        print("berth.load(optimize=True), 224x224 images, against the same torch path:")
        for name, batch, calls, bm, tm, ratio in optimized(paths["resnet18"], args.quick):
            print(f"{name:10} {batch:5d} {calls:6d} {bm * 1e6:10.1f}us {tm * 1e6:10.1f}us {ratio:6.3f}")
        cold = cold_start(paths["mlp"], 3 if args.quick else 5)
        (bs, br), (ts, tr) = cold["berth"], cold["torch"]
        print(f"cold start to first prediction (seed MLP): berth {bs * 1000:.0f} ms, torch {ts * 1000:.0f} ms, "
              f"ratio {bs / ts:.3f}")
        print(f"peak RSS: berth {br:.0f} MiB, torch {tr:.0f} MiB, ratio {br / tr:.3f}")


if __name__ == "__main__":
    main()
