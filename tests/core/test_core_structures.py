"""Real models' inputs and outputs: dict outputs (the Hugging Face style) become named
outputs, nested tuples and lists flatten with stable names, fixed Tuple[Tensor, ...]
arguments take one protocol input per element, a List[Tensor] argument takes the inputs
left (NAME.0, NAME.1, ...), and non-tensor arguments with defaults are left to them, from
Python and on the wire."""
import json
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

import berth
from conftest import save_script


class DictOut(torch.nn.Module):
    def forward(self, x) -> Dict[str, torch.Tensor]:
        return {"logits": x * 2, "total": x.sum(dim=1, keepdim=True)}


class Nested(torch.nn.Module):
    def forward(self, x) -> Tuple[Tuple[torch.Tensor, torch.Tensor], List[torch.Tensor], Dict[str, torch.Tensor]]:
        return (x + 1, x + 2), [x + 3], {"last": x + 4}


class TupleArg(torch.nn.Module):
    def forward(self, pair: Tuple[torch.Tensor, torch.Tensor], scale: float = 3.0):
        return pair[0] * scale + pair[1]


class ListArg(torch.nn.Module):
    """Order and count both change the answer."""
    def forward(self, bias, xs: List[torch.Tensor]):
        out = bias + len(xs)
        for i, x in enumerate(xs):
            out = out + x * (i + 1)
        return out


class ListThenTensor(torch.nn.Module):
    def forward(self, xs: List[torch.Tensor], y):
        return xs[0] + y


class NeedsInt(torch.nn.Module):
    def forward(self, x, k: int):
        return x * k


def test_dict_outputs_are_named_by_their_keys(tmp_path):
    model = berth.load(save_script(DictOut(), tmp_path / "dict.pt"))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = model.predict(x)
    assert isinstance(got, dict) and list(got) == ["logits", "total"]
    np.testing.assert_array_equal(got["logits"], x * 2)
    np.testing.assert_array_equal(got["total"], x.sum(axis=1, keepdims=True))
    with model.batcher(max_batch_size=4) as batcher:
        assert list(batcher.predict(x[:1], timeout=10)) == ["logits", "total"]


def test_nested_results_flatten_depth_first_with_path_names(tmp_path):
    model = berth.load(save_script(Nested(), tmp_path / "nested.pt"))
    x = np.zeros((1, 2), np.float32)
    got = model.predict(x)
    assert isinstance(got, tuple) and [float(a[0, 0]) for a in got] == [1, 2, 3, 4]
    from berth import _core  # the names the protocol uses, learnt from the forward
    service = _core.Service(model, "nested", batching=False)
    try:
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0, 0]}]})
        status, _, reply = service.handle("POST", "/v2/models/nested/infer", body.encode(),
                                          content_type="application/json")
        names = [o["name"] for o in json.loads(reply)["outputs"]]
        assert status == 200 and names == ["output_0.0", "output_0.1", "output_1.0", "output_2.last"], reply
    finally:
        service.close()


def test_tuple_arguments_take_one_input_per_element_and_defaults_stay(tmp_path):
    model = berth.load(save_script(TupleArg(), tmp_path / "pair.pt"))
    assert [s.name for s in model.inputs] == ["pair.0", "pair.1"]
    a, b = np.ones((2, 2), np.float32), np.full((2, 2), 5, np.float32)
    np.testing.assert_array_equal(model.predict(a, b), a * 3 + b)


def test_a_required_non_tensor_argument_is_refused_at_load(tmp_path):
    with pytest.raises(berth.ModelLoadError, match="argument 'k' is int without a default; berth passes tensors"):
        berth.load(save_script(NeedsInt(), tmp_path / "needs_int.pt"))


def _list_inputs(count, seed=0):
    rng = np.random.default_rng(seed)
    bias = rng.standard_normal((2, 3)).astype(np.float32)
    return bias, [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(count)]


def _torch_list_answer(path, bias, xs):
    module = torch.jit.load(path)
    return module(torch.from_numpy(bias), [torch.from_numpy(x) for x in xs]).numpy()


def test_a_list_argument_takes_the_inputs_left_as_torch_does(tmp_path):
    path = save_script(ListArg(), tmp_path / "list.pt")
    model = berth.load(path)
    # the C core serves at most 16 inputs: bias and up to 15 list elements
    assert [s.name for s in model.inputs] == ["bias"] + [f"xs.{k}" for k in range(15)]
    assert model.num_required_inputs == 2
    for count in (1, 2, 3):
        bias, xs = _list_inputs(count, seed=count)
        np.testing.assert_array_equal(model.predict(bias, *xs), _torch_list_answer(path, bias, xs))
    with pytest.raises(TypeError, match=r"predict\(\) expects 2 to 16 inputs .*got 1"):
        model.predict(np.zeros((2, 3), np.float32))


def test_a_list_argument_on_the_wire_batched_with_a_signature(tmp_path):
    """Served plain (one request per forward) and with a signature that lists three
    elements (batched; requests may still send fewer): answers equal torch's, bytes
    compared after JSON; a gap in the elements is the client's fault."""
    from serve_process import JSON_HEADERS, ServeProcess
    path = save_script(ListArg(), tmp_path / "list.pt")
    spec = ["--input", "bias:FP32:-1,3"] + [a for k in range(3) for a in ("--input", f"xs.{k}:FP32:-1,3")] \
        + ["--output", "y:FP32:-1,3"]
    for flags in ([], spec):
        server = ServeProcess(path, "--name", "m", *flags)
        try:
            assert ("batching on" if flags else "batching off") in "".join(server.lines), server.lines
            status, _, meta = server.request("GET", "/v2/models/m")
            names = [i["name"] for i in json.loads(meta)["inputs"]]
            assert status == 200 and names == (["bias", "xs.0", "xs.1", "xs.2"] if flags else
                                               ["bias"] + [f"xs.{k}" for k in range(15)]), meta
            for count in (1, 2, 3):
                bias, xs = _list_inputs(count, seed=10 + count)
                body = {"inputs": [{"name": name, "shape": list(a.shape), "datatype": "FP32",
                                    "data": a.ravel().tolist()}
                                   for name, a in zip(["bias"] + [f"xs.{k}" for k in range(count)], [bias, *xs])]}
                status, _, reply = server.request("POST", "/v2/models/m/infer", json.dumps(body).encode(),
                                                  JSON_HEADERS)
                assert status == 200, reply
                out = json.loads(reply)["outputs"][0]
                want = _torch_list_answer(path, bias, xs)
                assert out["shape"] == [2, 3]
                np.testing.assert_array_equal(np.array(out["data"], np.float32).reshape(2, 3), want)
            body = {"inputs": [{"name": n, "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}
                               for n in ("bias", "xs.0", "xs.2")]}
            status, _, reply = server.request("POST", "/v2/models/m/infer", json.dumps(body).encode(),
                                              JSON_HEADERS)
            assert status == 400 and "missing input 'xs.1'" in json.loads(reply)["error"], reply
        finally:
            assert server.stop() == 0
    # a signature lists the list's first element at least
    with pytest.raises(ValueError, match="lists 1 inputs but forward takes 2 to 16"):
        berth.load(path, inputs=["bias:FP32:-1,3"])


def test_an_argument_after_a_list_is_refused_at_load(tmp_path):
    with pytest.raises(berth.ModelLoadError, match="argument 'y' comes after the List\\[Tensor\\] 'xs', which "
                                                   "takes every input left; every argument after a "
                                                   "List\\[Tensor\\] needs a default"):
        berth.load(save_script(ListThenTensor(), tmp_path / "list_then.pt"))
