"""torch.export / AOTInductor packages (.pt2) through berth, against the paths a torch
2.x user has, in the same process and thread count.

    .venv/bin/python benchmarks/bench_pt2.py [--quick]

For the seed MLP (10 -> 128 -> 64 -> 1) and resnet18 (random weights, 64x64 images), at
batch 1, 64 and 1024, the median per-call latency of, interleaved (one call of each in
turn):

  berth.pt2     berth.load("m.pt2").predict(x)
  aoti-python   torch._inductor.aoti_load_package("m.pt2") + from_numpy + .numpy()
  berth.ts      berth.load("m.pt").predict(x) (TorchScript)
  jit-python    torch.jit.load("m.pt") + from_numpy + .numpy() (the round-1 baseline)
  eager         the nn.Module under inference_mode + from_numpy + .numpy()
  compile       torch.compile(module) (warmed up; compile time excluded) likewise

Then cold start (process start to first prediction; compile excluded) and peak RSS of
berth.load(.pt2) against `import torch` + aoti_load_package, median of 5 runs, and the
export and compile seconds of each package.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import berth  # noqa: E402
import models  # noqa: E402  (tests/models.py: resnet18 from torch.nn)
from bench_core import cold_start  # noqa: E402

PATHS = ("berth.pt2", "aoti-python", "berth.ts", "jit-python", "eager", "compile")


def build(directory):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(10, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                              torch.nn.ReLU(), torch.nn.Linear(64, 1)).eval()
    made = {}
    for name, module, shape in (("mlp", mlp, (10,)), ("resnet18", models.resnet18().eval(), (3, 64, 64))):
        pt2, ts = os.path.join(directory, f"{name}.pt2"), os.path.join(directory, f"{name}.pt")
        start = time.perf_counter()
        berth.export(module, torch.zeros((2,) + shape), pt2, max_batch=1024)
        seconds = time.perf_counter() - start
        torch.jit.save(torch.jit.script(module), ts)
        made[name] = (module, shape, pt2, ts, seconds)
    return made


def callables(module, pt2, ts):
    b_pt2, b_ts = berth.load(pt2), berth.load(ts)
    aoti = torch._inductor.aoti_load_package(pt2)
    jit = torch.jit.load(ts).eval()
    compiled = torch.compile(module)

    def via_torch(fn):
        def call(x):
            with torch.inference_mode():
                return fn(torch.from_numpy(x)).numpy()
        return call

    return {"berth.pt2": b_pt2.predict, "aoti-python": via_torch(aoti), "berth.ts": b_ts.predict,
            "jit-python": via_torch(jit), "eager": via_torch(module), "compile": via_torch(compiled)}


def latency(made, quick):
    rows = []
    rng = np.random.default_rng(0)
    for name, (module, shape, pt2, ts, _) in made.items():
        fns = callables(module, pt2, ts)
        for batch in (1, 64, 1024):
            x = rng.standard_normal((batch,) + shape).astype(np.float32)
            calls = ({1: 20000, 64: 5000, 1024: 1000} if name == "mlp" else {1: 100, 64: 10, 1024: 3})[batch]
            calls = max(3, calls // 10) if quick else calls
            for fn in fns.values():  # warm-up: TorchScript profiles, torch.compile compiles
                for _ in range(max(2, min(calls // 10, 50))):
                    fn(x)
            times = {k: [] for k in fns}
            clock = time.perf_counter
            for _ in range(calls):
                for k, fn in fns.items():
                    t0 = clock()
                    fn(x)
                    times[k].append(clock() - t0)
            rows.append((name, batch, calls, {k: statistics.median(v) for k, v in times.items()}))
    return rows


CHILD = {
    "berth.pt2": "import berth, numpy as np\nm = berth.load(P)\nm.predict(np.ones((1, 10), np.float32))",
    "aoti-python": ("import torch, numpy as np\nm = torch._inductor.aoti_load_package(P)\n"
                    "with torch.inference_mode():\n    m(torch.from_numpy(np.ones((1, 10), np.float32))).numpy()"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of the calls (a smoke run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        made = build(d)
        for name, (*_, seconds) in made.items():
            print(f"{name}: berth.export (torch.export + AOTInductor compile) took {seconds:.1f} s")
        rows = latency(made, args.quick)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; median us per call")
        print(f"{'model':9} {'batch':>5} {'calls':>6} " + " ".join(f"{p:>12}" for p in PATHS)
              + "  pt2/aoti  pt2/jit")
        for name, batch, calls, med in rows:
            print(f"{name:9} {batch:5d} {calls:6d} " + " ".join(f"{med[p] * 1e6:12.1f}" for p in PATHS)
                  + f"  {med['berth.pt2'] / med['aoti-python']:8.3f} {med['berth.pt2'] / med['jit-python']:8.3f}")
        cold = cold_start(made["mlp"][2], 3 if args.quick else 5, CHILD)
        (bs, br), (ts, tr) = cold["berth.pt2"], cold["aoti-python"]
        print(f"cold start to first prediction (seed MLP .pt2): berth {bs * 1000:.0f} ms, import torch + "
              f"aoti_load_package {ts * 1000:.0f} ms, ratio {bs / ts:.3f}")
        print(f"peak RSS: berth {br:.0f} MiB, torch {tr:.0f} MiB, ratio {br / tr:.3f}")


if __name__ == "__main__":
    main()
