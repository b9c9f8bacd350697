"""`python -m berth serve` as a process: the C HTTP server on the wire (HTTP and HTTPS),
batching under concurrent load, warm-up before readiness, SIGTERM with requests in
flight, limits, auth, metrics, and a storm of malformed bodies."""
import hashlib
import http.client
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import berth
from batching import slow_model
from conftest import assert_same_answer, save_script
from serve_process import JSON_HEADERS, ServeProcess, infer_body, infer_in_rounds, metric, output_of


@pytest.fixture(scope="module")
def seed_server(seed_model_path):
    digest = hashlib.sha256(open(seed_model_path, "rb").read()).hexdigest()
    server = ServeProcess(seed_model_path, "--name", "seed", "--max-delay-ms", "5",
                          "--sha256", digest, "--max-body-mb", "0.25", "--threads", "1")
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def seed_model(seed_model_path):
    return berth.load(seed_model_path, optimize=True)  # as serve loads it


def test_health_metadata_and_numbers(seed_server, seed_model):
    assert seed_server.request("GET", "/v2/health/live")[0] == 200
    assert seed_server.request("GET", "/v2/health/ready")[0] == 200
    status, headers, body = seed_server.request("GET", "/v2/models/seed")
    assert status == 200 and json.loads(body)["inputs"][0]["shape"] == [-1, 10]
    x = np.random.default_rng(3).standard_normal((4, 10)).astype(np.float32)
    status, headers, body = seed_server.request("POST", "/v2/models/seed/infer", infer_body(x),
                                                JSON_HEADERS)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert_same_answer(output_of(body), seed_model.predict(x))
    # binary in and out over the wire
    head = json.dumps({"inputs": [{"name": "dense_input", "shape": [4, 10], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 160}}],
                       "outputs": [{"name": "dense_2", "parameters": {"binary_data": True}}]}).encode()
    status, headers, body = seed_server.request(
        "POST", "/v2/models/seed/infer", head + x.tobytes(),
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body
    n = int(headers["Inference-Header-Content-Length"])
    assert json.loads(body[:n])["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert_same_answer(np.frombuffer(body[n:], np.float32).reshape(4, 1), seed_model.predict(x))
    status, _, body = seed_server.request("POST", "/v1/models/seed:predict",
                                          json.dumps({"instances": x.tolist()}).encode(), JSON_HEADERS)
    assert status == 200
    assert_same_answer(np.float32(json.loads(body)["predictions"]), seed_model.predict(x))

    # NumPy's import is ~50 ms of a cold start: the server never needs it
    assert "_multiarray_umath" not in open(f"/proc/{seed_server.proc.pid}/maps").read()


def test_errors_on_the_wire(seed_server):
    cases = [
        ("POST", "/v2/models/other/infer", b"{}", JSON_HEADERS, 404, "model 'other' not found"),
        ("GET", "/v2/models/seed/infer", None, {}, 405, "use POST"),
        ("POST", "/v2/models/seed/infer", b"{}", {"Content-Type": "text/csv"}, 415, "Content-Type"),
        ("POST", "/v2/models/seed/infer", b"{", JSON_HEADERS, 400, "not valid JSON"),
        ("POST", "/v2/models/seed/infer", b"x" * 300000, JSON_HEADERS, 413, "over the limit of 262144 bytes"),
    ]
    for method, path, body, headers, status, words in cases:
        got, resp_headers, reply = seed_server.request(method, path, body, headers)
        assert got == status, (path, reply)
        assert resp_headers["Content-Type"] == "application/json"
        assert words in json.loads(reply)["error"]
    # a chunked upload (no Content-Length) over the limit is refused too
    conn = seed_server.connection()
    conn.request("POST", "/v2/models/seed/infer", body=iter([b"y" * 100000] * 4),
                 headers=JSON_HEADERS, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and b"over the limit" in resp.read()
    conn.close()


def test_concurrent_requests_are_batched_and_each_gets_its_answer(slow_linear):
    """32 clients send at once to a model whose forwards take milliseconds: while one
    runs the others queue, so forwards must carry several requests, each answered with
    its own rows."""
    import torch
    path, module = slow_linear
    server = ServeProcess(path, "--name", "seed", "--max-delay-ms", "20", "--threads", "1")
    try:
        rng = np.random.default_rng(7)
        inputs = [rng.standard_normal((1, 10)).astype(np.float32) for _ in range(32 * 6)]
        before = metric(server.metrics(), "berth_batch_size_count{}")
        answers = infer_in_rounds(server, "seed", inputs, clients=32)
        with torch.inference_mode():
            for x, got in zip(inputs, answers):  # batched BLAS kernels differ in the last bit
                np.testing.assert_allclose(got, module(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)
        batches = metric(server.metrics(), "berth_batch_size_count{}") - before
        assert batches <= len(inputs) // 2, f"{batches:g} forwards for {len(inputs)} requests"
    finally:
        assert server.stop() == 0


def test_metrics_count_and_warm_up_ran_before_ready(seed_server):
    before = seed_server.metrics()
    count = 'berth_requests_total{endpoint="infer",code="200"}'
    for _ in range(3):
        assert seed_server.request("POST", "/v2/models/seed/infer", infer_body(np.ones((1, 10), np.float32)),
                                   JSON_HEADERS)[0] == 200
    text = seed_server.metrics()
    assert (metric(text, count) or 0) - (metric(before, count) or 0) == 3
    assert metric(text, "berth_model_warmup_seconds") > 0
    assert metric(text, "berth_model_load_seconds") > 0
    assert metric(text, "berth_ready") == 1
    assert "# TYPE berth_request_duration_seconds histogram" in text
    assert "# TYPE berth_inflight_requests gauge" in text
    log = "".join(seed_server.lines)
    assert log.index("warmed up in") < log.index("berth: ready")


def test_readiness_only_after_warm_up(seed_model_path):
    server = ServeProcess(seed_model_path, "--max-batch-size", "32", wait_ready=False)
    try:
        observed = []
        while True:
            status = server.request("GET", "/v2/health/ready")[0]
            observed.append(status)
            if status == 200:
                break
        # the first time readiness is 200, warm-up ran its 2 rounds of 1 row, which begin
        # the batch tuning's climb (the seed's climb then runs in warm-up where it fits in
        # 50 ms, not under the sanitizers: tests/serving/test_serving_tuning.py)
        text = server.metrics()
        assert metric(text, 'berth_batch_size_bucket{le="1"}') >= 2
        assert 1 <= metric(text, "berth_batch_limit") <= 32
        assert set(observed) <= {503, 200}
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_requests_in_flight(models_dir):
    meta = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 512]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 512]}]}
    path = save_script(slow_model(), models_dir / "slow_http.pt", meta)
    model = berth.load(path)
    server = ServeProcess(path, "--max-batch-size", "1", "--grace-period", "20")
    xs = [np.full((8, 512), i / 10, np.float32) for i in range(16)]  # ~tens of ms each
    results = [None] * len(xs)

    def client(i):
        results[i] = server.request("POST", "/v2/models/slow_http/infer", infer_body(xs[i], "x"),
                                    JSON_HEADERS)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while metric(server.metrics(), "berth_inflight_requests") < 3:  # 2+ infer, plus this one
        assert any(t.is_alive() for t in threads) and time.time() < deadline, \
            "the requests finished before any was seen in flight"
    started = time.time()
    server.proc.send_signal(signal.SIGTERM)
    ready_statuses = []  # probes while the requests are still in flight
    while any(t.is_alive() for t in threads) and 503 not in ready_statuses:
        try:
            ready_statuses.append(server.request("GET", "/v2/health/ready")[0])
        except ConnectionError:
            break
    for t in threads:
        t.join()
    rc = server.proc.wait(30)
    server.reader.join(5)
    assert rc == 0 and time.time() - started < 20
    assert ready_statuses[-1] == 503 and set(ready_statuses) <= {200, 503}
    for x, (status, _, body) in zip(xs, results):
        assert status == 200, body
        np.testing.assert_allclose(output_of(body), model.predict(x), rtol=1e-5, atol=1e-6)
    assert "received SIGTERM" in "".join(server.lines)


def test_checksum_mismatch_refuses_to_start(seed_model_path):
    run = subprocess.run([sys.executable, "-m", "berth", "serve", seed_model_path, "--port", "0",
                          "--sha256", "0" * 64], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "refusing to start" in run.stderr and "expected " + "0" * 64 in run.stderr
    env = dict(os.environ, BERTH_MODEL_SHA256="ab" * 32)
    run = subprocess.run([sys.executable, "-m", "berth", "serve", seed_model_path, "--port", "0"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 2 and "refusing to start" in run.stderr


def test_tls_and_bearer_token(seed_model_path, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    token = tmp_path / "token"
    token.write_text("t0ken-value\n")
    server = ServeProcess(seed_model_path, "--tls-cert", str(cert), "--tls-key", str(key),
                          "--auth-token-file", str(token))
    try:
        context = ssl.create_default_context(cafile=str(cert))
        x = np.ones((1, 10), np.float32)

        def call(method, path, body=None, headers=None):
            conn = server.connection(context)
            try:
                return server.request(method, path, body, headers, conn)
            finally:
                conn.close()

        assert call("GET", "/v2/health/ready")[0] == 200
        status, headers, body = call("POST", "/v2/models/seed/infer", infer_body(x), JSON_HEADERS)
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        status, _, body = call("POST", "/v2/models/seed/infer", infer_body(x),
                               dict(JSON_HEADERS, Authorization="Bearer t0ken-value"))
        assert status == 200
        assert_same_answer(output_of(body), berth.load(seed_model_path, optimize=True).predict(x))
        assert call("GET", "/metrics")[0] == 401
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            server.request("GET", "/v2/health/live")  # plain HTTP to the HTTPS port
    finally:
        assert server.stop() == 0


def malformed_bodies(rng, count):
    """(body, headers) pairs that are each wrong in some way."""
    valid = {"inputs": [{"name": "dense_input", "shape": [1, 10], "datatype": "FP32",
                         "data": [0.5] * 10}]}
    valid_bytes = json.dumps(valid).encode()
    wrong_values = [None, True, "x", -1, 1.5, [], {}, [[1]], 1e300, 2 ** 70, [-1],
                    [2 ** 62, 2 ** 62], "FP8", [[0.5] * 10, [0.5]], {"binary_data_size": 7}]
    fields = ["name", "shape", "datatype", "data", "parameters"]
    out = []
    while len(out) < count:
        kind = rng.randrange(6)
        headers = dict(JSON_HEADERS)
        if kind == 0:  # random bytes
            body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 400)))
            try:
                json.loads(body)
                continue
            except ValueError:
                pass
        elif kind == 1:  # truncated valid body
            body = valid_bytes[:rng.randrange(0, len(valid_bytes))]
        elif kind == 2:  # one field of the input replaced by a wrong value
            req = json.loads(valid_bytes)
            field, value = rng.choice(fields), rng.choice(wrong_values)
            if field == "parameters" and value == {}:
                continue  # empty parameters are allowed
            req["inputs"][0][field] = value
            body = json.dumps(req).encode()
        elif kind == 3:  # top level of the wrong shape
            body = json.dumps(rng.choice([[], {"inputs": rng.choice(wrong_values)},
                                          {"inputs": [rng.choice(wrong_values)]}, 3, "s"])).encode()
        elif kind == 4:  # binary extension with a wrong header length or size
            head = json.dumps({"inputs": [{"name": "dense_input", "shape": [1, 10], "datatype": "FP32",
                                           "parameters": {"binary_data_size": rng.choice([0, 39, 41, 400])}}]}).encode()
            body = head + bytes(40)
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(rng.choice([len(head), len(head) - 1, -3, 10 ** 9]))}
        else:  # a valid body with a wrong Content-Type
            body = valid_bytes
            headers = {"Content-Type": rng.choice(["text/plain", "image/png", "application/jsonx"])}
        out.append((body, headers))
    return out


def test_storm_of_malformed_bodies_gets_4xx_and_leaves_the_server_right(seed_server, seed_model):
    rng = random.Random(1234)
    bodies = malformed_bodies(rng, 3000)
    statuses = []

    def client(t):
        conn = seed_server.connection()
        for k in range(t, len(bodies), 8):
            body, headers = bodies[k]
            path = rng.choice(["/v2/models/seed/infer", "/v2/models/seed/versions/1/infer"])
            status, resp_headers, reply = seed_server.request("POST", path, body, headers, conn)
            assert 400 <= status < 500, (status, body, reply)
            assert "error" in json.loads(reply)
            statuses.append(status)
        conn.close()

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == len(bodies)
    assert seed_server.proc.poll() is None
    x = np.random.default_rng(9).standard_normal((3, 10)).astype(np.float32)
    status, _, body = seed_server.request("POST", "/v2/models/seed/infer", infer_body(x), JSON_HEADERS)
    assert status == 200
    assert_same_answer(output_of(body), seed_model.predict(x))


def test_a_port_in_use_is_refused(seed_server, seed_model_path):
    run = subprocess.run([sys.executable, "-m", "berth", "serve", seed_model_path, "--host", "127.0.0.1",
                          "--port", str(seed_server.port)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert f"cannot listen on 127.0.0.1:{seed_server.port}" in run.stderr


def test_bad_tls_files_are_refused_clearly(seed_model_path, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    run = subprocess.run([sys.executable, "-m", "berth", "serve", seed_model_path, "--port", "0",
                          "--tls-cert", str(junk), "--tls-key", str(junk)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "must be PEM text of a certificate and its matching private key" in run.stderr
    run = subprocess.run([sys.executable, "-m", "berth", "serve", seed_model_path, "--port", "0",
                          "--tls-cert", str(junk)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "HTTPS needs both --tls-cert and --tls-key" in run.stderr
