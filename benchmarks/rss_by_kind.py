"""The server's RSS under one kind of early-ended request at a time, for telling a leak
from the allocator's heaps settling (see "Soak and restart" in benchmarks/README.md).

    python benchmarks/rss_by_kind.py slow MODEL --seconds 150 --clients 200
    python benchmarks/rss_by_kind.py over MODEL --seconds 90 --body-mb 1

``slow``: CLIENTS connections send an infer head a byte at a time and are closed by the
header deadline (``--header-timeout 1``), then reconnect. ``over``: 8 threads send, on
new connections, bodies over ``--max-body-mb`` (Content-Length and chunked), bad JSON and
good requests. Prints the server's VmRSS every 10 s with the counts so far. MODEL: a
TorchScript file taking one float32 input x of shape (-1, 4), or ``identity`` for one
made here.
"""
import argparse
import json
import re
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time

HEAD = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def identity_model(directory):
    """A TorchScript identity on float32 (-1, 4), with its signature."""
    import torch

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 4]}]}
    path = f"{directory}/identity.pt"
    torch.jit.save(torch.jit.script(Identity()), path, _extra_files={"berth.json": json.dumps(signature)})
    return path


def start(model, flags):
    proc = subprocess.Popen([sys.executable, "-m", "berth", "serve", model, "--name", "m", "--port", "0",
                             "--host", "127.0.0.1", *flags], stderr=subprocess.PIPE, text=True)
    port = None
    for line in proc.stderr:
        m = re.search(r"listening on https?://[^ ]+:(\d+)", line)
        port = int(m.group(1)) if m else port
        if line.strip() == "berth: ready":
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def slow(port, stop, counts, clients):
    head = HEAD + b"X-Slow: " + b"a" * 4000
    conns = {}

    def connect():
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        conns[s] = 0

    for _ in range(clients):
        connect()
    while not stop.is_set():
        readable, _, _ = select.select(list(conns), [], [], 0.02)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:  # closed by the header deadline
                conns.pop(s)
                s.close()
                counts["closed"] = counts.get("closed", 0) + 1
                connect()
        for s, sent in list(conns.items()):
            try:
                s.send(head[sent:sent + 1])
                conns[s] = sent + 1
            except OSError:
                pass
        time.sleep(0.03)
    for s in conns:
        s.close()


def over(port, stop, counts, body_mb):
    big = b"x" * int(body_mb * 1.1 * (1 << 20))
    chunk = b"%x\r\n" % 100000 + b"y" * 100000 + b"\r\n"
    good = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "data": [1, 2, 3, 4]}]}).encode()
    kinds = [HEAD + b"Content-Length: %d\r\n\r\n" % len(big) + big,
             HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * int(body_mb * 12) + b"0\r\n\r\n",
             HEAD + b"Content-Length: 5\r\n\r\n{bad}",
             HEAD + b"Content-Length: %d\r\n\r\n" % len(good) + good]

    def worker(i):
        while not stop.is_set():
            s = socket.create_connection(("127.0.0.1", port))
            try:
                s.sendall(kinds[i % len(kinds)])
                key = s.recv(200)[9:12].decode() or "closed"
            except OSError as e:  # the server refused the body before it was all sent
                key = type(e).__name__
            s.close()
            counts[key] = counts.get(key, 0) + 1
            i += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["slow", "over"])
    p.add_argument("model")
    p.add_argument("--seconds", type=float, default=90)
    p.add_argument("--clients", type=int, default=200, help="slow: connections (under --per-ip-connections)")
    p.add_argument("--body-mb", type=float, default=1, help="over: the server's --max-body-mb")
    args = p.parse_args()
    flags = ["--header-timeout", "1"] if args.kind == "slow" else ["--max-body-mb", str(args.body_mb)]
    with tempfile.TemporaryDirectory() as tmp:
        model = identity_model(tmp) if args.model == "identity" else args.model
        proc, port = start(model, flags)
    stop, counts = threading.Event(), {}
    load = (threading.Thread(target=slow, args=(port, stop, counts, args.clients)) if args.kind == "slow"
            else threading.Thread(target=over, args=(port, stop, counts, args.body_mb)))
    load.start()
    began = time.time()
    print("seconds rss_kib counts", flush=True)
    while time.time() - began < args.seconds:
        time.sleep(10)
        print(round(time.time() - began), rss_kib(proc.pid), dict(sorted(counts.items())), flush=True)
    stop.set()
    load.join()
    proc.terminate()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
