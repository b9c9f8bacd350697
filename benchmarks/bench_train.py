"""Training speed: berth's ``Sequential.fit`` vs a hand-written torch loop, same data, model and optimizer.

Both train the seed MLP (10 -> 128 -> 64 -> 1, relu) with Adam (Keras' epsilon 1e-7)
on MSE, batch size 32, shuffling every epoch. Repetitions are interleaved (berth,
torch, torch, berth, ...) so drift in machine load hits both equally. The figure
of merit is the median, over repetitions, of berth's time divided by the torch
loop's time in the same repetition; the target is <= 1.10x. The ratio of the
best (least disturbed) times is printed too.

Run:  PYTHONPATH=python /usr/bin/python3 benchmarks/bench_train.py
"""

import argparse
import statistics
import time

import numpy as np
import torch

from berth.train import Sequential, layers, optimizers


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
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return (time.perf_counter() - start) / epochs


def time_torch(x, y, epochs, batch_size):
    """The loop a torch user writes by hand."""
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.MSELoss()
    start = time.perf_counter()
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
        _epoch_loss = running / n
    return (time.perf_counter() - start) / epochs


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
    print(f"{'variant':<28} {'median s/epoch':>14} {'best s/epoch':>12} {'paired ratio':>13} {'best ratio':>11}")
    for name in names:
        t, base = times[name], times[base_name]
        # Runs of a repetition are adjacent in time, so their ratio cancels slow drifts in machine load.
        paired = statistics.median(a / b for a, b in zip(t, base))
        print(f"{name:<28} {statistics.median(t):>14.4f} {min(t):>12.4f} {paired:>12.3f}x {min(t) / min(base):>10.3f}x")
    paired = statistics.median(a / b for a, b in zip(times["berth fit"], times[base_name]))
    print(f"berth fit / torch loop: median paired ratio {paired:.3f}x (target <= 1.10x): "
          f"{'PASS' if paired <= 1.10 else 'FAIL'}")


if __name__ == "__main__":
    main()
