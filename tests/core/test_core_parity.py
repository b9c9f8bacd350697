"""berth.load(...).predict equals torch on real architectures, scripted and traced."""
import numpy as np
import pytest
import torch
import models

import berth
from conftest import save_script

TOL = 1e-5


def torch_forward(path, *arrays):
    module = torch.jit.load(path)
    with torch.inference_mode():
        out = module(*[torch.from_numpy(a) for a in arrays])
    return tuple(o.numpy() for o in out) if isinstance(out, (tuple, list)) else out.numpy()


def assert_close(got, want):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            assert_close(g, w)
        return
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "f":
        assert np.max(np.abs(got - want), initial=0.0) <= TOL
    else:
        np.testing.assert_array_equal(got, want)


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(5, 3)

    def forward(self, left, right):
        s = self.a(left) + self.b(right)
        return s, torch.sigmoid(s)


class TokenClassifier(torch.nn.Module):
    """Integer input (token ids) through an embedding and an LSTM; returns a tuple."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, tokens):
        h, (hn, cn) = self.lstm(self.embed(tokens))
        return self.head(h[:, -1]), hn


def cases():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, batch_first=True), 2)
    return [
        ("resnet18", models.resnet18(), (image,)),
        ("mobilenet_v3_small", models.mobilenet_v3_small(), (image,)),
        ("transformer_encoder", encoder, (rng.standard_normal((3, 7, 16)).astype(np.float32),)),
        ("lstm_tokens", TokenClassifier(), (rng.integers(0, 50, (4, 9)).astype(np.int64),)),
        ("two_inputs", TwoInputs(), (rng.standard_normal((6, 4)).astype(np.float32),
                                     rng.standard_normal((6, 5)).astype(np.float32))),
    ]


@pytest.mark.parametrize("mode", ["script", "trace"])
@pytest.mark.parametrize("name,module,inputs", cases(), ids=[c[0] for c in cases()])
def test_parity_with_torch(tmp_path, mode, name, module, inputs):
    module.eval()
    trace_inputs = tuple(torch.from_numpy(a) for a in inputs) if mode == "trace" else None
    if mode == "trace" and len(trace_inputs) == 1:
        trace_inputs = trace_inputs[0]
    path = save_script(module, tmp_path / f"{name}.pt", trace_inputs=trace_inputs)
    model = berth.load(path)
    assert_close(model.predict(*inputs), torch_forward(path, *inputs))


def test_signature_from_forward_schema(tmp_path):
    path = save_script(TwoInputs(), tmp_path / "two.pt")
    model = berth.load(path)
    assert [s.name for s in model.inputs] == ["left", "right"]
    assert model.inputs[0].dtype is None and model.inputs[0].shape is None
    assert model.outputs == () and model.metadata == {}


def test_signature_and_metadata_from_berth_json(seed_model_path):
    model = berth.load(seed_model_path)
    assert model.inputs == (berth.TensorSpec("dense_input", "float32", (-1, 10)),)
    assert model.outputs == (berth.TensorSpec("dense_2", "float32", (-1, 1)),)
    assert model.metadata["berth_format"] == 1
    assert model.batchable


def test_float64_input_is_cast_for_a_float32_model(seed_model_path):
    model = berth.load(seed_model_path)
    x = np.random.default_rng(1).standard_normal((5, 10))
    got = model.predict(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, model.predict(x.astype(np.float32)), rtol=0, atol=0)
    want = torch_forward(seed_model_path, x.astype(np.float32))
    assert np.max(np.abs(got - want)) <= TOL


def test_lists_are_accepted_as_input(seed_model_path):
    model = berth.load(seed_model_path)
    rows = [[0.5] * 10, [1.5] * 10]
    np.testing.assert_array_equal(model.predict(rows), model.predict(np.array(rows, dtype=np.float32)))
