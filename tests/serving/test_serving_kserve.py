"""Conformance with KServe's Python SDK (package ``kserve``, its ``InferenceRESTClient``),
v2 and v1, against `python -m berth serve`: a berth-saved model and a plain torch.jit.save
file given a signature with --input/--output.

kserve is a test dependency (requirements/pypi-stack.txt), never berth's own; skipped
without it."""
import asyncio

import numpy as np
import pytest

from conftest import save_script
from serve_process import ServeProcess
from two_outputs import META

kserve = pytest.importorskip("kserve", reason="kserve is not installed (requirements/pypi-stack.txt pins it)")
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig  # noqa: E402


@pytest.fixture(scope="module")
def two_server(models_dir):
    import torch

    class Two(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    path = save_script(Two(), models_dir / "kserve_two.pt", META)
    proc = ServeProcess(path, "--name", "two", "--threads", "1", "--max-delay-ms", "5")
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def plain_server(plain_ids_path):
    proc = ServeProcess(plain_ids_path, "--name", "ids", "--input", "ids:INT64:-1,4",
                        "--output", "doubled:INT64:-1,4", "--threads", "1", "--max-delay-ms", "5")
    yield proc
    assert proc.stop() == 0


def run(coroutine_function, protocol):
    async def body():
        client = InferenceRESTClient(RESTConfig(protocol=protocol, retries=1, timeout=30))
        try:
            return await coroutine_function(client)
        finally:
            await client.close()
    return asyncio.run(body())


def test_v2_health_metadata_and_infer(two_server):
    base = f"http://127.0.0.1:{two_server.port}"
    x = np.arange(6, dtype=np.float32).reshape(2, 3)

    async def calls(client):
        inp = InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        as_json = await client.infer(base, InferRequest("two", [inp]), model_name="two")
        inp_bin = InferInput("x", list(x.shape), "FP32")
        inp_bin.set_data_from_numpy(x, binary_data=True)
        as_binary = await client.infer(base, InferRequest("two", [inp_bin]), model_name="two")
        return (await client.is_server_live(base), await client.is_server_ready(base),
                await client.is_model_ready(base, "two"), as_json, as_binary)

    live, ready, model_ready, as_json, as_binary = run(calls, "v2")
    assert live is True and ready is True and model_ready is True
    for response in (as_json, as_binary):
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        np.testing.assert_array_equal(outputs["double"], x * 2)
        np.testing.assert_array_equal(outputs["plus"], x + 1)


def test_v2_plain_file_with_a_signature(plain_server):
    base = f"http://127.0.0.1:{plain_server.port}"
    ids = np.arange(8, dtype=np.int64).reshape(2, 4)

    async def calls(client):
        inp = InferInput("ids", list(ids.shape), "INT64")
        inp.set_data_from_numpy(ids, binary_data=True)
        return await client.infer(base, InferRequest("ids", [inp]), model_name="ids")

    response = run(calls, "v2")
    assert response.outputs[0].name == "doubled" and response.outputs[0].datatype == "INT64"
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), ids * 2)


def test_v1_infer_and_model_ready(two_server, plain_server):
    async def calls(client):
        two = await client.infer(f"http://127.0.0.1:{two_server.port}", {"instances": [[1.0, 2.0, 3.0]]},
                                 model_name="two")
        ids = await client.infer(f"http://127.0.0.1:{plain_server.port}", {"instances": [[1, 2, 3, 4]]},
                                 model_name="ids")
        ready = await client.is_model_ready(f"http://127.0.0.1:{two_server.port}", "two")
        return two, ids, ready

    two, ids, ready = run(calls, "v1")
    assert ready is True
    assert ids == {"predictions": [[2, 4, 6, 8]]}
    assert "predictions" in two, two


def test_v1_server_live(two_server):
    """KServe v1 liveness is GET / answering {"status": "alive"}."""
    async def calls(client):
        return await client.is_server_live(f"http://127.0.0.1:{two_server.port}")

    assert run(calls, "v1") is True
