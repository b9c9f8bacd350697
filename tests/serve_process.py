"""`python -m berth serve` as a child process for the tests that talk to it over HTTP:
ServeProcess (started and read until ready) and the helpers for its requests and answers
(JSON bodies, /metrics samples, concurrent rounds of requests)."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np

JSON_HEADERS = {"Content-Type": "application/json"}


class ServeProcess:
    """`python -m berth serve MODEL ... --port 0`, started and read until ready."""

    def __init__(self, model_path, *args, env=None, wait_ready=True):
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "berth", "serve", str(model_path), "--host", "127.0.0.1",
             "--port", "0", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, env=full_env)
        self.lines = []
        self.port = None
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on https?://[^ ]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                if not wait_ready:
                    break
            if line.strip() == "berth: ready":
                break
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()
        assert self.port, "server did not start:\n" + "".join(self.lines)

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def connection(self, context=None):
        if context is not None:
            return http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=30)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            if own:
                conn.close()

    def metrics(self):
        return self.request("GET", "/metrics")[2].decode()

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.reader.join(5)
        return rc


def metric(text, name):
    """A sample of a one-model server's /metrics, named without its model and version
    labels: berth_batch_size_count{} or berth_inflight_requests."""
    text = re.sub(r'model="[^"]*",version="[^"]*",?', "", text)
    for wanted in (name, name + "{}"):
        m = re.search(r"^" + re.escape(wanted) + r" ([0-9.e+-]+)$", text, re.M)
        if m:
            return float(m.group(1))
    return None


def infer_body(x, name="dense_input"):
    return json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def output_of(body):
    out = json.loads(body)["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def infer_in_rounds(server, model, inputs, clients, name="dense_input"):
    """Sends each of ``inputs`` (one request each) to /v2/models/MODEL/infer from
    ``clients`` keep-alive connections, in rounds whose requests leave together (a
    barrier), and returns the answers in order: requests that queue up behind a forward,
    for batching tests. Each answer must be 200."""
    answers = [None] * len(inputs)
    start = threading.Barrier(clients)

    def client(t):
        conn = server.connection()
        for k in range(t, len(inputs), clients):
            body = infer_body(inputs[k], name)
            start.wait()
            status, _, reply = server.request("POST", f"/v2/models/{model}/infer", body, JSON_HEADERS, conn)
            assert status == 200, reply
            answers[k] = output_of(reply)
        conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a is not None for a in answers), "a client failed (see its traceback above)"
    return answers
