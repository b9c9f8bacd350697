"""Training speed: berth's ``Sequential.fit`` vs a hand-written torch loop, same data, model and optimizer.

Both train the seed MLP (10 -> 128 -> 64 -> 1, relu) with Adam (Keras' epsilon 1e-7)
on MSE, batch size 32, shuffling every epoch. Repetitions are interleaved (berth,
torch, torch, berth, ...) so drift in machine load hits both equally. The figure
of merit is the median, over repetitions, of berth's time per epoch divided by
the torch loop's in the same repetition; the target is <= 1.10x. Both wall-clock
and process CPU time are reported; with one torch thread the CPU time is the
work done, and it stays steady when other processes share the cores, so the
target is judged on it.

Run (after `make build`):  .venv/bin/python benchmarks/bench_train.py
"""

import argparse
import statistics
import time
from contextlib import contextmanager

import numpy as np
import torch

from berth.train import Sequential, layers, optimizers


@contextmanager
def clock(result, epochs):
    """Append ``(wall seconds, CPU seconds)`` per epoch for the block to ``result``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    result.append(((time.perf_counter() - wall) / epochs, (time.process_time() - cpu) / epochs))


def make_data(samples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, 10)).astype(np.float32)
    y = (np.tanh(x @ rng.standard_normal((10, 1))) + 0.1 * rng.standard_normal((samples, 1))).astype(np.float32)
    return x, y


def berth_model(metrics):
    model = Sequential([
        layers.Dense(128, activation="relu", input_shape=(10,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(1),
    ])
    model.compile(optimizer=optimizers.Adam(learning_rate=1e-3), loss="mse", metrics=metrics)
    return model


def time_berth(x, y, epochs, batch_size, metrics=(), verbose=0):
    model = berth_model(list(metrics))
    result = []
    with clock(result, epochs):
        model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return result[0]


def time_torch(x, y, epochs, batch_size):
    """The loop a torch user writes by hand."""
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.MSELoss()
    result = []
    with clock(result, epochs):
        _train(model, optimizer, loss_fn, x, y, epochs, batch_size)
    return result[0]


def _train(model, optimizer, loss_fn, x, y, epochs, batch_size):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(xt)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        running = 0.0
        for i in range(0, n, batch_size):
            index = order[i:i + batch_size]
            xb, yb = xt[index], yt[index]
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(xb)
        epoch_loss = running / n  # what a hand-written loop reports each epoch
    return epoch_loss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=21, help="interleaved runs per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (same for both)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = make_data(args.samples)

    variants = {
        "torch loop (baseline)": lambda: time_torch(x, y, args.epochs, args.batch_size),
        "berth fit": lambda: time_berth(x, y, args.epochs, args.batch_size),
        "berth fit, metrics=['mae']": lambda: time_berth(x, y, args.epochs, args.batch_size, metrics=["mae"]),
    }
    times = {name: [] for name in variants}
    for name, run in variants.items():  # warm-up, untimed
        run()
    names = list(variants)
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            times[name].append(variants[name]())

    base_name = names[0]
    steps = -(-args.samples // args.batch_size)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.samples} samples, batch {args.batch_size} "
          f"({steps} steps/epoch), {args.epochs} epoch(s) per run x {args.repeats} interleaved runs")
    print(f"{'variant':<28} {'wall s/epoch':>12} {'CPU s/epoch':>12} {'wall ratio':>11} {'CPU ratio':>10}")
    ratios = {}
    for name in names:
        wall = [w for w, _ in times[name]]
        cpu = [c for _, c in times[name]]
        base = times[base_name]
        # Runs of a repetition are adjacent in time, so their ratio cancels drifts in machine load.
        wall_ratio = statistics.median(w / b[0] for w, b in zip(wall, base))
        cpu_ratio = statistics.median(c / b[1] for c, b in zip(cpu, base))
        ratios[name] = cpu_ratio
        print(f"{name:<28} {statistics.median(wall):>12.4f} {statistics.median(cpu):>12.4f} "
              f"{wall_ratio:>10.3f}x {cpu_ratio:>9.3f}x")
    ratio = ratios["berth fit"]
    print(f"berth fit / torch loop: median paired CPU-time ratio {ratio:.3f}x (target <= 1.10x): "
          f"{'PASS' if ratio <= 1.10 else 'FAIL'}")


if __name__ == "__main__":
    main()
