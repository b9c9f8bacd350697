"""``python -m berth demo``: the seed workflow end to end, printing where each artifact goes.

1. train the seed MLP (10 -> 128 -> 64 -> 1) on synthetic data with berth's Keras-style API;
2. save it with its signature embedded: as a torch.export / AOTInductor package
   (``model.pt2``) on torch >= 2.6, else as TorchScript (``model.pt``);
3. load it into the C core and compare its predictions and latency with torch's;
4. write a Docker build context and Kubernetes manifests for it (``berth deploy``);
5. serve it with ``berth serve`` on 127.0.0.1 and send one Open Inference Protocol request.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np


def synthetic_regression(n, seed=0):
    """x: (n, 10) float32; y = a fixed smooth function of x plus a little noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, 10, dtype=np.float32)
    y = np.sin(x @ w)[:, None] + 0.1 * x[:, :1] ** 2 + 0.01 * rng.standard_normal((n, 1))
    return x, y.astype(np.float32)


def step(n, text):
    print(f"\n[{n}/5] {text}", flush=True)


def train_and_save(out_dir, epochs):
    import berth
    berth.set_seed(0)
    x, y = synthetic_regression(4000)
    model = berth.Sequential([
        berth.layers.Dense(128, activation="relu", input_shape=(10,)),
        berth.layers.Dense(64, activation="relu"),
        berth.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=epochs, batch_size=32, validation_split=0.2, verbose=2)
    print(f"      final loss {history.history['loss'][-1]:.4f}, val_loss {history.history['val_loss'][-1]:.4f}")
    from berth.pt2 import MIN_TORCH
    import torch
    pt2 = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= MIN_TORCH
    path = os.path.join(out_dir, "model.pt2" if pt2 else "model.pt")
    start = time.perf_counter()
    model.save(path)
    what = "torch.export + AOTInductor package" if pt2 else "TorchScript"
    print(f"      saved {what} + berth.json -> {path} ({time.perf_counter() - start:.1f} s)")
    return model, path


def compare_with_torch(model, path):
    import berth
    served = berth.load(path)
    x, _ = synthetic_regression(64, seed=1)
    a, b = model.predict(x), served.predict(x)
    print(f"      {served!r}")
    print(f"      C core vs training model: max |diff| = {float(np.max(np.abs(a - b))):.2e} on 64 rows")
    one = x[:1]
    for _ in range(200):
        served.predict(one)
    calls = 5000
    start = time.perf_counter()
    for _ in range(calls):
        served.predict(one)
    per_call = (time.perf_counter() - start) / calls
    print(f"      berth.load(...).predict(1x10): {per_call * 1e6:.1f} us per call; prediction {served.predict(one)[0, 0]:.4f}")
    return served


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_ask(path, name, x):
    port = free_port()
    cmd = [sys.executable, "-m", "berth", "serve", path, "--host", "127.0.0.1", "--port", str(port), "--name", name]
    print("      $ " + " ".join(["python -m berth"] + cmd[3:]))
    server = subprocess.Popen(cmd)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError("berth serve did not become ready")
            time.sleep(0.2)
        body = {"inputs": [{"name": "dense_input", "shape": list(x.shape), "datatype": "FP32",
                            "data": x.ravel().tolist()}]}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                                         data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        print(f"      POST /v2/models/{name}/infer {json.dumps(body)[:90]}...")
        with urllib.request.urlopen(request, timeout=10) as r:
            answer = json.loads(r.read())
        print(f"      -> {json.dumps(answer)}")
        return answer
    finally:
        server.terminate()
        code = server.wait(timeout=30)
        print(f"      SIGTERM: the server drained and exited with status {code}")


def main(argv=()):
    parser = argparse.ArgumentParser(prog="python -m berth demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="berth-demo", help="directory for the artifacts (default ./berth-demo)")
    parser.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    args = parser.parse_args(list(argv))
    import berth
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)

    step(1, "train the seed model (Dense 128 relu -> Dense 64 relu -> Dense 1) on synthetic data")
    model, path = train_and_save(out_dir, args.epochs)
    step(2, f"saved as {berth.load(path).format}; its signature travels inside the file")
    print(f"      {path}: inputs {berth.load(path).inputs}")
    step(3, "run it from C (no `import torch` on this path)")
    compare_with_torch(model, path)
    step(4, "write a Docker build context and Kubernetes manifests")
    context = berth.deploy(path, name="seed-model", out=os.path.join(out_dir, "deploy"), force=True)
    print(f"      build context -> {context.out}  (image {context.image})")
    for f in context.files:
        if f.startswith("k8s/") or f in ("Dockerfile", "README.md"):
            print(f"        {f}")
    step(5, "serve it over the Open Inference Protocol and send a request")
    x, _ = synthetic_regression(2, seed=2)
    answer = serve_and_ask(path, context.name, x)
    served = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(answer["outputs"][0]["shape"])
    local = berth.load(path, optimize=True).predict(x)  # as serve loads it
    print(f"      server answer equals berth.load(..., optimize=True).predict: max |diff| = {float(np.max(np.abs(served - local))):.2e}")
    print(f"\nartifacts: model {path}\n           deploy context {context.out}\n"
          f"next: see {os.path.join(str(context.out), 'README.md')} for the build, push and apply commands")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
