"""Errors by whose fault they are: what the client sent wrong is a 4xx, what the model
does wrong is a 500 with the message (dashboards watching 5xx see it), and a model whose
warm-up fails is never reported ready."""
import json
import time

import numpy as np
import pytest

import berth
from berth import _core
from conftest import save_script

JSON = "application/json"
X_META = {"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 3]}],
          "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 3]}]}


def v2_body(name="x", rows=1):
    return json.dumps({"inputs": [{"name": name, "shape": [rows, 3], "datatype": "FP32",
                                   "data": [0.5] * (3 * rows)}]}).encode()


def service_for(path, name="m", **options):
    service = _core.Service(berth.load(path), name, **options)
    service.set_ready(True)
    return service


def answer(service, method, path, body=b""):
    status, headers, out = service.handle(method, path, body, JSON)
    return status, json.loads(out)


_counter = [0]


def model(forward_source, returns="torch.Tensor", folder=None):
    """A module whose forward is forward_source (TorchScript needs it in a real file)."""
    import importlib.util
    import tempfile
    _counter[0] += 1
    path = f"{folder or tempfile.mkdtemp()}/faulty_{_counter[0]}.py"
    with open(path, "w") as f:
        f.write("from typing import List\nimport torch\n\n"
                "class M(torch.nn.Module):\n"
                f"    def forward(self, x: torch.Tensor) -> {returns}:\n"
                f"        {forward_source}\n")
    spec = importlib.util.spec_from_file_location(f"faulty_{_counter[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.M()


@pytest.mark.parametrize("source, returns, words", [
    ("return x.to(torch.bfloat16)", "torch.Tensor", "dtype BFloat16"),
    ("return 'text'", "str", "returned a String"),
    ("return [x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, "
     "x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, "
     "x, x, x, x, x, x, x, x, x, x]", "List[torch.Tensor]", "berth takes at most 64"),
])
def test_a_model_returning_what_berth_cannot_serve_is_a_500(models_dir, source, returns, words):
    path = save_script(model(source, returns), models_dir / f"bad_{abs(hash(source))}.pt")
    service = service_for(path, batching=False)
    try:
        for url, body in (("/v2/models/m/infer", v2_body()),
                          ("/v1/models/m:predict", b'{"instances": [[1, 2, 3]]}')):
            status, out = answer(service, "POST", url, body)
            assert status == 500, (url, status, out)
            assert words in out["error"]
    finally:
        service.close()


def test_an_output_without_the_batch_dimension_is_a_500_on_v1(models_dir):
    path = save_script(model("return x.sum()"), models_dir / "scalar.pt")
    service = service_for(path, batching=False)
    try:
        status, out = answer(service, "POST", "/v1/models/m:predict", b'{"instances": [[1, 2, 3]]}')
        assert status == 500 and "no leading dimension matching the instances" in out["error"]
    finally:
        service.close()


def test_an_output_without_the_batch_dimension_is_a_500_when_batched(models_dir):
    # Two requests in one batch: the batcher cannot split a scalar output between them.
    import threading
    meta = {"inputs": X_META["inputs"],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1]}]}
    path = save_script(model("return x.sum()"), models_dir / "scalar_meta.pt", meta)
    service = service_for(path, max_delay_ms=200.0)
    statuses = []
    try:
        def one():
            statuses.append(answer(service, "POST", "/v2/models/m/infer", v2_body()))
        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        batched = [out for status, out in statuses if status != 200]
        for status, out in statuses:
            assert status in (200, 500), (status, out)
        if batched:  # they met in one batch (nearly always with a 200 ms window)
            assert "not a leading batch dimension" in batched[0]["error"]
    finally:
        service.close()


def test_forward_failing_on_input_that_matched_a_complete_signature_is_the_models_fault(models_dir):
    path = save_script(model("torch._assert(bool(x.sum() > 1e9), 'broken model')\n"
                             "        return x"), models_dir / "raises_meta.pt", X_META)
    plain = save_script(model("torch._assert(bool(x.sum() > 1e9), 'broken model')\n"
                              "        return x"), models_dir / "raises_plain.pt")
    signed, unsigned = service_for(path), service_for(plain)
    try:
        status, out = answer(signed, "POST", "/v2/models/m/infer", v2_body())
        assert status == 500 and "broken model" in out["error"]
        # Without a signature berth cannot tell a bad input from a bad model: the client's.
        status, out = answer(unsigned, "POST", "/v2/models/m/infer", v2_body())
        assert status == 400 and "broken model" in out["error"]
        # A client fault stays a client fault: the signature check answers before forward.
        status, out = answer(signed, "POST", "/v2/models/m/infer", json.dumps(
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode())
        assert status == 400 and "expects shape (-1, 3), got (1, 2)" in out["error"]
        with pytest.raises(berth.InferenceError, match="broken model"):
            berth.load(path).predict(np.zeros((1, 3), np.float32))
    finally:
        signed.close()
        unsigned.close()


def test_a_model_whose_warm_up_fails_is_not_ready_and_says_why(models_dir):
    path = save_script(model("torch._assert(bool(x.sum() > 1e9), 'needs real data')\n"
                             "        return x"), models_dir / "warm_fails.pt", X_META)
    service = _core.Service(berth.load(path), "m")
    try:
        with pytest.raises(berth.InferenceError, match="needs real data"):
            service.warmup()
        service.set_ready(True)  # what a careless caller might do: it stays not ready
        assert not service.ready
        for url in ("/v2/health/ready", "/v2/models/m/ready"):
            status, out = answer(service, "GET", url)
            assert status == 503 and out["ready"] is False
            assert "warm-up" in out["error"] and "needs real data" in out["error"]
        assert answer(service, "GET", "/v2/health/live") == (200, {"live": True})
    finally:
        service.close()


def test_serve_logs_a_failed_warm_up_and_stays_not_ready(models_dir):
    from serve_process import ServeProcess
    path = save_script(model("torch._assert(bool(x.sum() > 1e9), 'needs real data')\n"
                             "        return x"), models_dir / "warm_fails_serve.pt", X_META)
    server = ServeProcess(path, "--name", "m", "--threads", "1", wait_ready=False)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any("warm-up failed" in line for line in server.lines):
            time.sleep(0.05)
        log = "".join(server.lines)
        assert "warm-up failed, the model stays not ready" in log and "needs real data" in log
        assert "berth: ready" not in log
        status, _, body = server.request("GET", "/v2/health/ready")
        assert status == 503 and json.loads(body)["ready"] is False
    finally:
        assert server.stop() == 0
