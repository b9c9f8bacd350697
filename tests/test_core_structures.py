"""Real models' inputs and outputs: dict outputs (the Hugging Face style) become named
outputs, nested tuples and lists flatten with stable names, fixed Tuple[Tensor, ...]
arguments take one protocol input per element, and non-tensor arguments with defaults
are left to them, from Python and on the wire."""
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
