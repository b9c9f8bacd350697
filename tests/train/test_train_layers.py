"""Every layer type: shapes, Keras parameter counts, and saved-model parity.

Parity: ``model.predict`` must equal the saved TorchScript file run by torch
(``torch.jit.load``) and by the C core (``berth.load``) within 1e-6.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import berth
from berth.train import Sequential, layers
from berth.train.saving import read_metadata
from berth.utils import set_seed

RNG = np.random.default_rng(0)


def _images(n=16, h=8, w=8, c=3):
    return RNG.standard_normal((n, h, w, c)).astype(np.float32)


def _seq(n=16, t=6, f=4):
    return RNG.standard_normal((n, t, f)).astype(np.float32)


# (id, layers, x, loss): each model trains two short epochs, so weights and
# BatchNorm statistics differ from their initial values before saving.
CASES = [
    ("dense", lambda: [layers.Dense(16, activation="relu", input_shape=(10,)), layers.Dense(1)],
     RNG.standard_normal((32, 10)).astype(np.float32), "mse"),
    ("activation", lambda: [layers.Dense(8, input_shape=(5,)), layers.Activation("tanh"), layers.Dense(2),
                            layers.Activation("softmax")],
     RNG.standard_normal((32, 5)), "sparse_categorical_crossentropy"),
    ("dropout", lambda: [layers.Dense(16, activation="relu", input_shape=(6,)), layers.Dropout(0.5), layers.Dense(1)],
     RNG.standard_normal((32, 6)).astype(np.float32), "mse"),
    ("batchnorm_flat", lambda: [layers.Dense(8, input_shape=(6,)), layers.BatchNormalization(), layers.Dense(1)],
     RNG.standard_normal((32, 6)).astype(np.float32), "mse"),
    ("batchnorm_image", lambda: [layers.Conv2D(4, 3, input_shape=(8, 8, 3)), layers.BatchNormalization(),
                                 layers.Flatten(), layers.Dense(1)], _images(), "mse"),
    ("flatten_reshape", lambda: [layers.Reshape((4, 6), input_shape=(24,)), layers.Flatten(),
                                 layers.Reshape((-1, 3)), layers.Flatten(), layers.Dense(2)],
     RNG.standard_normal((32, 24)).astype(np.float32), "mse"),
    ("conv1d", lambda: [layers.Conv1D(5, 3, activation="relu", input_shape=(12, 4)),
                        layers.Conv1D(3, 4, strides=2, padding="same"), layers.Flatten(), layers.Dense(1)],
     _seq(t=12), "mse"),
    ("conv2d_valid", lambda: [layers.Conv2D(6, 3, activation="relu", input_shape=(8, 8, 3)), layers.Flatten(),
                              layers.Dense(1)], _images(), "mse"),
    ("conv2d_same_strided", lambda: [layers.Conv2D(4, (3, 2), strides=2, padding="same", input_shape=(9, 7, 3)),
                                     layers.Flatten(), layers.Dense(1)], _images(h=9, w=7), "mse"),
    ("maxpool", lambda: [layers.Conv2D(4, 3, padding="same", input_shape=(8, 8, 3)), layers.MaxPooling2D(),
                         layers.MaxPooling2D(3, strides=2, padding="same"), layers.Flatten(), layers.Dense(1)],
     _images(), "mse"),
    ("global_average_pooling", lambda: [layers.Conv2D(5, 3, input_shape=(8, 8, 3)), layers.GlobalAveragePooling2D(),
                                        layers.Dense(3, activation="softmax")],
     _images(), "sparse_categorical_crossentropy"),
    ("embedding", lambda: [layers.Embedding(50, 8, input_shape=(7,)), layers.Flatten(), layers.Dense(1)],
     RNG.integers(0, 50, (32, 7)), "mse"),
    ("lstm_last", lambda: [layers.LSTM(6, input_shape=(None, 4)), layers.Dense(1)], _seq(), "mse"),
    ("lstm_sequences", lambda: [layers.LSTM(5, return_sequences=True, input_shape=(6, 4)), layers.LSTM(3),
                                layers.Dense(1)], _seq(), "mse"),
    ("embedding_lstm", lambda: [layers.Embedding(20, 4, input_shape=(9,)), layers.LSTM(4),
                                layers.Dense(2, activation="softmax")],
     RNG.integers(0, 20, (32, 9)), "sparse_categorical_crossentropy"),
    ("torch_module", lambda: [layers.Dense(8, input_shape=(5,)), torch.nn.LayerNorm(8), torch.nn.GELU(),
                              layers.Dense(1)], RNG.standard_normal((32, 5)).astype(np.float32), "mse"),
]


def _trained(case, tmp_path):
    name, build, x, loss = case
    set_seed(0)
    model = Sequential(build())
    model.compile(optimizer="adam", loss=loss)
    out = model.output_shape
    if loss == "sparse_categorical_crossentropy":
        y = RNG.integers(0, out[-1], len(x))
    else:
        y = RNG.standard_normal((len(x),) + out).astype(np.float32)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / f"{name}.pt"
    model.save(path)
    return model, x, path


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_saved_torchscript_matches_predict(case, tmp_path):
    model, x, path = _trained(case, tmp_path)
    expected = model.predict(x)
    scripted = torch.jit.load(str(path))
    assert not scripted.training
    meta = read_metadata(path)
    (spec,) = meta["inputs"]
    assert spec["name"] == model.layers[0].name + "_input"
    assert spec["shape"] == [-1] + [-1 if d is None else d for d in model.input_shape]
    assert meta["outputs"][0]["shape"] == [-1] + list(model.output_shape)
    assert meta["export"] == {"method": "script"}
    tensor = torch.as_tensor(np.asarray(x, dtype=spec["dtype"]))
    with torch.no_grad():
        got = scripted(**{spec["name"]: tensor}).numpy()  # forward takes the input by its name
    assert got.shape == expected.shape == (len(x),) + tuple(model.output_shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_c_core_predict_matches_predict(case, tmp_path):
    model, x, path = _trained(case, tmp_path)
    loaded = berth.load(str(path))
    assert loaded.inputs[0].name == model.layers[0].name + "_input"
    got = loaded.predict(np.asarray(x))  # float64 is cast by the core; int ids stay int64
    np.testing.assert_allclose(got, model.predict(x), rtol=0, atol=1e-6)


def test_c_core_reports_signature_and_rejects_wrong_feature_count(tmp_path):
    model = Sequential([layers.Dense(4, activation="relu", input_shape=(10,)), layers.Dense(1)])
    path = tmp_path / "seed.pt"
    model.save(path)
    loaded = berth.load(str(path))
    (spec,) = loaded.inputs
    assert (spec.name, spec.dtype, tuple(spec.shape)) == ("dense_input", "float32", (-1, 10))
    assert tuple(loaded.outputs[0].shape) == (-1, 1)
    assert loaded.metadata["model"]["config"] == model.get_config()
    with pytest.raises(ValueError, match=r"input 'dense_input' expects shape \(-1, 10\), got \(3, 7\)"):
        loaded.predict(np.zeros((3, 7), dtype=np.float32))


def test_output_shapes_follow_keras_conventions():
    model = Sequential([
        layers.Conv2D(8, 3, input_shape=(28, 28, 1)),                     # valid: 26
        layers.Conv2D(8, 3, strides=2, padding="same"),                   # ceil(26 / 2) = 13
        layers.MaxPooling2D(),                                            # floor(13 / 2) = 6
        layers.MaxPooling2D(pool_size=(4, 4), strides=4, padding="same"),  # ceil(6 / 4) = 2
        layers.Flatten(),
        layers.Reshape((4, -1)),
        layers.LSTM(3, return_sequences=True),
        layers.Conv1D(2, 2, padding="same"),
        layers.Flatten(),
    ])
    assert [layer.output_shape for layer in model.layers] == [
        (26, 26, 8), (13, 13, 8), (6, 6, 8), (2, 2, 8), (32,), (4, 8), (4, 3), (4, 2), (8,)]
    out = model.predict(np.zeros((2, 28, 28, 1), dtype=np.float32))
    assert out.shape == (2, 8)


def test_conv2d_uses_channels_last_layout_and_tensorflow_same_padding():
    set_seed(3)
    conv = layers.Conv2D(2, 3, strides=2, padding="same", input_shape=(5, 6, 3))
    model = Sequential([conv])
    x = RNG.standard_normal((2, 5, 6, 3)).astype(np.float32)
    # TensorFlow pads 'same' with the extra row/column at the bottom/right:
    # height 5, stride 2, kernel 3 -> total pad 2 (1, 1); width 6 -> total 1 (0, 1).
    padded = F.pad(torch.as_tensor(x).permute(0, 3, 1, 2), (0, 1, 1, 1))
    expected = F.conv2d(padded, conv.conv.weight, conv.conv.bias, stride=2).permute(0, 2, 3, 1)
    np.testing.assert_allclose(model.predict(x), expected.detach().numpy(), atol=1e-6)
    assert model.output_shape == (3, 3, 2)


def test_flatten_keeps_channels_last_order():
    model = Sequential([layers.Flatten(input_shape=(2, 3, 4))])
    x = np.arange(48, dtype=np.float32).reshape(2, 2, 3, 4)
    np.testing.assert_array_equal(model.predict(x), x.reshape(2, -1))


def test_batchnorm_normalises_the_channel_axis_with_keras_momentum():
    bn = layers.BatchNormalization(momentum=0.9, input_shape=(4, 3))
    model = Sequential([bn])
    model.compile(optimizer="sgd", loss="mse")
    x = RNG.standard_normal((64, 4, 3)).astype(np.float32) * 3 + 5
    model.fit(x, np.zeros_like(x), epochs=1, batch_size=64, shuffle=False, verbose=0)
    # One batch: moving = 0.9 * initial + 0.1 * batch mean, per channel (last axis).
    np.testing.assert_allclose(bn.norm.running_mean.numpy(), 0.1 * x.reshape(-1, 3).mean(axis=0), rtol=1e-5)


def test_summary_prints_keras_table_with_parameter_counts(capsys):
    model = Sequential([
        layers.Dense(128, activation="relu", input_shape=(10,)),
        layers.Dense(64, activation="relu"),
        layers.Dense(1),
    ])
    model.summary()
    text = capsys.readouterr().out
    assert 'Model: "sequential"' in text
    assert " dense (Dense)" in text and "(None, 128)" in text
    rows = {line.split()[0]: int(line.split()[-1]) for line in text.splitlines() if line.startswith(" dense")}
    assert rows == {"dense": 10 * 128 + 128, "dense_1": 128 * 64 + 64, "dense_2": 65}
    assert "Total params: 9,729" in text and "Trainable params: 9,729" in text
    assert "Non-trainable params: 0" in text


def test_parameter_counts_match_keras():
    model = Sequential([
        layers.Conv2D(32, 3, input_shape=(28, 28, 1)),  # Keras: 320
        layers.BatchNormalization(),                     # Keras: 128 (64 trainable, 64 moving stats)
        layers.Flatten(),
        layers.Dense(10),
    ])
    counts = [layer.count_params() for layer in model.layers]
    assert counts[:3] == [(320, 0), (64, 64), (0, 0)]
    assert counts[3] == (26 * 26 * 32 * 10 + 10, 0)
    assert layers.Embedding(1000, 64).build((5,)) == (5, 64)
    embed = Sequential([layers.Embedding(1000, 64, input_shape=(5,))])
    assert embed.count_params() == 64000
    # torch's LSTM keeps two bias vectors per gate where Keras keeps one: 4 * units more.
    lstm = Sequential([layers.LSTM(32, input_shape=(None, 16))])
    assert lstm.count_params() == 4 * (16 * 32 + 32 * 32 + 32) + 4 * 32


def test_embedding_model_declares_int64_input(tmp_path):
    model = Sequential([layers.Embedding(10, 3, input_shape=(4,)), layers.Flatten(), layers.Dense(1)])
    path = tmp_path / "e.pt"
    model.save(path)
    assert read_metadata(path)["inputs"][0]["dtype"] == "int64"
    with pytest.raises(ValueError, match="expects integer ids"):
        model.predict(np.full((2, 4), 0.5))


class NamedTorchOp(torch.nn.Module):
    """A user's module TorchScript cannot compile (it looks the op up by name at run time)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return getattr(torch, self.op)(x)


def test_unscriptable_user_module_is_traced_and_says_so(tmp_path):
    set_seed(0)
    model = Sequential([layers.Dense(4, input_shape=(3,)), NamedTorchOp("sin"), layers.Dense(1)])
    path = tmp_path / "traced.pt"
    with pytest.warns(UserWarning, match="saving a trace instead"):
        model.save(path)
    export = read_metadata(path)["export"]
    assert export["method"] == "trace" and export["reason"]
    loaded = torch.jit.load(str(path))
    x = RNG.standard_normal((5, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(dense_input=torch.as_tensor(x)).numpy(), model.predict(x), atol=1e-6)
