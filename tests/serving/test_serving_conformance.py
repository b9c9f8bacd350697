"""Conformance with a client no one here wrote: NVIDIA's tritonclient.http against
`python -m berth serve` (the C server on the wire), for a TorchScript file and a .pt2. tritonclient is a test dependency
(requirements/pypi-stack.txt), never berth's own; the test is skipped without it."""
import threading

import numpy as np
import pytest

from conftest import save_script
from serve_process import ServeProcess
from two_outputs import META

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module", params=["torchscript", "pt2"])
def server(models_dir, request):
    """The same two-output model as a berth-signed TorchScript file and as a .pt2."""
    import torch

    class Two(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    if request.param == "pt2":
        if tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6):
            pytest.skip(f"torch {torch.__version__} cannot export .pt2 packages")
        import berth
        path = berth.export(Two(), torch.zeros(2, 3), str(models_dir / "two_out.pt2"), input_names=["x"],
                            output_names=["double", "plus"])
    else:
        path = save_script(Two(), models_dir / "two_out.pt", META)
    proc = ServeProcess(path, "--name", "two", "--threads", "1", "--max-delay-ms", "5")
    yield proc
    assert proc.stop() == 0


@pytest.fixture()
def client(server):
    c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", concurrency=4)
    yield c
    c.close()


def make_input(x, binary=True, name="x"):
    inp = httpclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return inp


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("two") and client.is_model_ready("two", "1")
    assert not client.is_model_ready("two", "7")
    meta = client.get_server_metadata()
    assert meta["name"] == "berth" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("two")
    assert model["name"] == "two" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert [o["name"] for o in model["outputs"]] == ["double", "plus"]
    config = client.get_model_config("two")
    assert config["platform"] == "pytorch_libtorch" and config["max_batch_size"] == 64
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_binary_and_json(client, binary):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    outputs = [httpclient.InferRequestedOutput("double", binary_data=binary),
               httpclient.InferRequestedOutput("plus", binary_data=binary)]
    result = client.infer("two", [make_input(x, binary)], outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("double"), x * 2)
    np.testing.assert_array_equal(result.as_numpy("plus"), x + 1)
    assert result.get_response()["id"] == "r1"
    assert result.get_response()["model_version"] == "1"


def test_default_outputs_and_requested_outputs(client):
    x = np.ones((1, 3), np.float32)
    result = client.infer("two", [make_input(x)])  # every output, binary by default
    np.testing.assert_array_equal(result.as_numpy("plus"), x + 1)
    only = client.infer("two", [make_input(x)], outputs=[httpclient.InferRequestedOutput("plus")])
    assert only.as_numpy("double") is None
    np.testing.assert_array_equal(only.as_numpy("plus"), x + 1)


def test_compressed_requests_and_responses(client):
    x = np.random.default_rng(0).standard_normal((300, 3)).astype(np.float32)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("two", [make_input(x, binary=False)],
                              request_compression_algorithm=algorithm,
                              response_compression_algorithm="gzip")
        np.testing.assert_array_equal(result.as_numpy("double"), x * 2)


def test_async_infer_from_many_threads(server):
    # tritonclient.http runs on gevent: a client belongs to one thread, so each thread has
    # its own, with several requests in flight at once (they meet in berth's batches).
    errors, done = [], []

    def worker(k):
        try:
            c = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", concurrency=4)
            try:
                x = np.full((1, 3), k, np.float32)
                pending = [c.async_infer("two", [make_input(x)]) for _ in range(5)]
                for p in pending:
                    np.testing.assert_array_equal(p.get_result().as_numpy("double"), x * 2)
            finally:
                c.close()
            done.append(k)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(done) == 8


def test_inference_statistics(client):
    x = np.ones((2, 3), np.float32)
    before = client.get_inference_statistics("two")["model_stats"][0]
    client.infer("two", [make_input(x)])
    after = client.get_inference_statistics("two")["model_stats"][0]
    assert after["name"] == "two" and after["version"] == "1"
    assert after["inference_count"] == before["inference_count"] + 2
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["last_inference"] >= before["last_inference"]
    everything = client.get_inference_statistics()
    assert [m["name"] for m in everything["model_stats"]] == ["two"]


def test_errors_reach_the_client_as_exceptions(client):
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException, match="expects shape"):
        client.infer("two", [make_input(np.ones((1, 4), np.float32))])
    with pytest.raises(InferenceServerException, match="has no version '3'"):
        client.infer("two", [make_input(np.ones((1, 3), np.float32))], model_version="3")


def test_content_codings_on_the_wire(server):
    import gzip
    import json
    rows = np.ones((300, 3), np.float32)
    body = json.dumps({"inputs": [{"name": "x", "shape": [300, 3], "datatype": "FP32",
                                   "data": rows.ravel().tolist()}]}).encode()
    status, headers, out = server.request(
        "POST", "/v2/models/two/infer", gzip.compress(body),
        {"Content-Type": "application/json", "Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(out))["outputs"][0]["shape"] == [300, 3]
    status, headers, out = server.request("POST", "/v2/models/two/infer", body,
                                          {"Content-Type": "application/json"})
    assert status == 200 and "Content-Encoding" not in headers
    # A decompression bomb: 70 MiB of spaces (over --max-body-mb's 64) in a 70 KB body.
    bomb = gzip.compress(b" " * (70 << 20), compresslevel=9)
    status, _, out = server.request("POST", "/v2/models/two/infer", bomb,
                                    {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert status == 413 and "inflates to more than the limit" in json.loads(out)["error"]


def _serve_in_thread(make_server):
    """Starts an HTTP server on a free port in a daemon thread; returns (port, stop)."""
    server = make_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server.server_port, server.shutdown


@pytest.fixture(scope="module", params=["flask", "fastapi"])
def adapter_url(request, models_dir):
    """The same model behind a Flask blueprint (werkzeug) or a FastAPI router (uvicorn)."""
    import time

    import torch

    class Two(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    path = save_script(Two(), models_dir / "two_adapter.pt", META)
    from berth.serving import fastapi_router, flask_blueprint
    if request.param == "flask":
        from flask import Flask
        from werkzeug.serving import make_server
        app = Flask("conformance")
        app.register_blueprint(flask_blueprint(path, name="two"))
        port, stop = _serve_in_thread(lambda: make_server("127.0.0.1", 0, app, threaded=True))
        yield f"127.0.0.1:{port}"
        stop()
    else:
        import uvicorn
        from fastapi import FastAPI
        app = FastAPI()
        app.include_router(fastapi_router(path, name="two"))
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
        server.should_exit = True
        thread.join(10)


def test_tritonclient_against_the_adapters(adapter_url):
    c = httpclient.InferenceServerClient(url=adapter_url)
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("two")
        assert c.get_model_metadata("two")["name"] == "two"
        assert c.get_model_config("two")["input"][0]["data_type"] == "TYPE_FP32"
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        for binary in (True, False):
            result = c.infer("two", [make_input(x, binary)],
                             outputs=[httpclient.InferRequestedOutput("plus", binary_data=binary)],
                             request_compression_algorithm="gzip",
                             response_compression_algorithm="gzip")
            np.testing.assert_array_equal(result.as_numpy("plus"), x + 1)
        stats = c.get_inference_statistics("two")["model_stats"][0]
        assert stats["inference_count"] == 4 and stats["inference_stats"]["success"]["count"] == 2
    finally:
        c.close()


def test_tritonclient_with_a_plain_torchscript_file(models_dir):
    # No berth.json: no batching, outputs named output_0.., and still the client's calls work.
    import torch

    class Plain(torch.nn.Module):
        def forward(self, x):
            return x - 1

    path = save_script(Plain(), models_dir / "plain_conformance.pt")
    proc = ServeProcess(path, "--name", "plain", "--threads", "1")
    try:
        c = httpclient.InferenceServerClient(url=f"127.0.0.1:{proc.port}")
        try:
            assert c.is_model_ready("plain")
            assert c.get_model_config("plain")["max_batch_size"] == 0
            x = np.arange(4, dtype=np.float32).reshape(2, 2)
            result = c.infer("plain", [make_input(x)], request_compression_algorithm="gzip")
            assert c.get_model_metadata("plain")["inputs"][0]["name"] == "x"
            np.testing.assert_array_equal(result.as_numpy("output_0"), x - 1)
            assert c.get_inference_statistics("plain")["model_stats"][0]["execution_count"] == 1
        finally:
            c.close()
    finally:
        assert proc.stop() == 0
