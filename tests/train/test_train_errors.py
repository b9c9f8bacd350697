"""Bad input gets a clear error naming the argument, what was received and what to change."""

import os

import numpy as np
import pytest
import torch

from berth.train import Sequential, callbacks, layers, optimizers
from berth import set_seed

X = np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32)
Y = X[:, :1] * 2


def _model(compiled=True, **compile_args):
    model = Sequential([layers.Dense(4, activation="relu", input_shape=(10,)), layers.Dense(1)])
    if compiled:
        model.compile(**{"optimizer": "adam", "loss": "mse", **compile_args})
    return model


def test_x_and_y_lengths_differ():
    with pytest.raises(ValueError, match=r"x and y must have the same number of samples .*x has 20, y has 19"):
        _model().fit(X, Y[:19], verbose=0)
    with pytest.raises(ValueError, match=r"validation_data\[0\] and validation_data\[1\] .* has 5, .* has 4"):
        _model().fit(X, Y, validation_data=(X[:5], Y[:4]), verbose=0)


def test_wrong_feature_count_names_the_input():
    with pytest.raises(ValueError, match=r"x: input 'dense_input' expects shape \(-1, 10\), got \(3, 7\)"):
        _model().predict(np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r"x: input 'dense_input' expects shape \(-1, 10\), got \(20, 10, 1\)"):
        _model().fit(X[..., None], Y, verbose=0)


@pytest.mark.parametrize("loss,y,message", [
    ("mse", np.zeros((20, 3)), r"y: loss 'mse' needs targets shaped like the model output \(-1, 1\), got \(20, 3\)"),
    ("categorical_crossentropy", np.zeros(20, dtype=int),
     r"got \(20,\) \(integer class labels: use loss='sparse_categorical_crossentropy'\)"),
    ("sparse_categorical_crossentropy", np.eye(3)[np.zeros(20, dtype=int)],
     r"expects integer class labels of shape \(-1,\), got \(20, 3\) \(one-hot rows: use loss='categorical_crossentropy'\)"),
    ("sparse_categorical_crossentropy", np.full(20, 3), r"class labels must be in \[0, 3\) .* got labels from 3 to 3"),
    ("sparse_categorical_crossentropy", np.full(20, 0.5), r"expects integer class labels, got float64 values"),
    ("binary_crossentropy", np.full((20, 1), 2.0), r"expects targets in \[0, 1\], got values from 2.0 to 2.0"),
])
def test_targets_incompatible_with_the_loss(loss, y, message):
    units = 1 if loss in ("mse", "binary_crossentropy") else 3
    model = Sequential([layers.Dense(units, activation="softmax" if units > 1 else "sigmoid", input_shape=(10,))])
    model.compile(optimizer="adam", loss=loss)
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, verbose=0)


@pytest.mark.parametrize("call,message", [
    (lambda: _model(optimizer="adma"), r"optimizer: unknown name 'adma'; did you mean 'adam'\?"),
    (lambda: _model(loss="mes"), r"loss: unknown name 'mes'; did you mean 'mse'\?"),
    (lambda: _model(loss="binary_crossentropi"), r"did you mean 'binary_crossentropy'\?"),
    (lambda: _model(metrics=["accuracyy"]), r"metrics: unknown name 'accuracyy'; did you mean 'accuracy'\?"),
    (lambda: layers.Dense(3, activation="rlu"), r"activation: unknown name 'rlu'; did you mean 'relu'\?"),
    (lambda: layers.Activation("sigmod"), r"did you mean 'sigmoid'\?"),
    (lambda: Sequential.from_config({"layers": [{"class_name": "Dens", "config": {}}]}),
     r"class_name: unknown name 'Dens'; did you mean 'dense'\?"),
])
def test_unknown_names_suggest_the_closest(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("stack,message", [
    (lambda: [layers.Dense(8, input_shape=(10,)), layers.Conv2D(4, 3)],
     r"layers\[1\]: layer 'conv2d' \(Conv2D\) expects input of shape \(height, width, channels\), got \(8,\); "
     r"add a Reshape layer .* \(after layer 'dense', which gives \(-1, 8\)\)"),
    (lambda: [layers.Dense(8, input_shape=(10,)), layers.LSTM(4)], r"layers\[1\]: layer 'lstm' \(LSTM\) expects input of shape \(timesteps, features\)"),
    (lambda: [layers.LSTM(4, input_shape=(None, 3), return_sequences=True), layers.Flatten()],
     r"layers\[1\]: layer 'flatten' \(Flatten\) needs every input dimension known, got \(None, 4\)"),
    (lambda: [layers.Dense(6, input_shape=(10,)), layers.Reshape((4, 2))], r"cannot reshape \(6,\) \(6 values\) to \(4, 2\)"),
    (lambda: [layers.Conv2D(4, 5, input_shape=(3, 3, 1))], r"input size 3 is smaller than the kernel"),
    (lambda: [layers.Dense(8, input_shape=(10,)), torch.nn.Linear(5, 2)],
     r"layers\[1\]: layer 'linear' \(TorchModule\) cannot take input of shape \(8,\)"),
    (lambda: [layers.Dense(8, input_shape=(10,)), "dense"], r"layers\[1\]: expected a berth layer .* got str 'dense'"),
    (lambda: [layers.Dense(8, input_shape=(10,), name="a"), layers.Dense(8, name="a")],
     r"layers\[1\]: layer name 'a' is already used"),
])
def test_layer_that_cannot_follow_the_previous_one(stack, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Sequential(stack())


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match=r"Dense: units must be a positive integer, got 0"):
        layers.Dense(0)
    with pytest.raises(ValueError, match=r"Dropout: rate must be a number in \[0, 1\), got 1.5"):
        layers.Dropout(1.5)
    with pytest.raises(ValueError, match=r"Conv2D: padding must be 'valid' or 'same', got 'full'"):
        layers.Conv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match=r"Dense: input_shape must be a tuple of positive integers"):
        layers.Dense(3, input_shape=(0,))


def test_fit_evaluate_before_compile():
    with pytest.raises(ValueError, match=r"fit: the model is not compiled; call model.compile\(optimizer='adam', loss='mse'\)"):
        _model(compiled=False).fit(X, Y)
    with pytest.raises(ValueError, match=r"evaluate: the model is not compiled"):
        _model(compiled=False).evaluate(X, Y)
    with pytest.raises(ValueError, match=r"loss: compile needs a loss"):
        _model(compiled=False).compile(optimizer="adam")


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
    ({"epochs": 2.5}, r"epochs must be an integer >= 0, got 2.5"),
    ({"validation_split": 1.0}, r"validation_split must be a number in \[0, 1\), got 1.0"),
    ({"validation_split": 0.99}, r"validation_split=0.99 leaves 0 of 20 samples for training"),
    ({"verbose": 3}, r"verbose must be 0 \(silent\), 1 \(progress bar\), 2 \(one line per epoch\) or 'auto', got 3"),
    ({"callbacks": [print]}, r"callbacks\[0\]: expected a berth.callbacks.Callback"),
    ({"validation_data": (X,)}, r"validation_data must be a tuple \(x_val, y_val\)"),
])
def test_fit_arguments_are_checked(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _model().fit(X, Y, **kwargs)


def test_non_numeric_input():
    with pytest.raises(TypeError, match=r"x: expected an array, got None"):
        _model().fit(None, Y)
    with pytest.raises(TypeError, match=r"x: expected a numeric array, got dtype <U1"):
        _model().predict(np.array([["a"] * 10]))
    with pytest.raises(TypeError, match=r"y: expected a numeric array with rows of equal length"):
        _model().fit(X[:2], [[1.0], [1.0, 2.0]])


def test_save_to_unwritable_path_leaves_nothing(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match=r"path: directory '.*missing' does not exist"):
        model.save(tmp_path / "missing" / "model.pt")
    with pytest.raises(ValueError, match=r"path: '.*' is a directory; give a file name"):
        model.save(tmp_path)
    with pytest.raises(TypeError, match=r"path: expected a file path \(str or os.PathLike\), got int 3"):
        model.save(3)
    with pytest.raises(ValueError, match=r"path: directory .* does not exist"):
        model.save_weights(tmp_path / "missing" / "w.pt")
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "model.pt"
    model.save(path)
    before = path.read_bytes()

    def broken_save(module, filename, _extra_files=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert os.listdir(tmp_path) == ["model.pt"]
    assert path.read_bytes() == before


def test_save_before_build():
    with pytest.raises(ValueError, match=r"save: the model has no built layers; give the first layer input_shape"):
        Sequential([layers.Dense(1)]).save("never.pt")
    assert not os.path.exists("never.pt")


def test_load_weights_mismatch(tmp_path):
    path = tmp_path / "w.pt"
    _model().save_weights(path)
    other = Sequential([layers.Dense(5, input_shape=(10,)), layers.Dense(1)])
    with pytest.raises(ValueError, match=r"do not fit this model: shape mismatch body.0.linear.weight: model \(5, 10\), file \(4, 10\)"):
        other.load_weights(path)
    with pytest.raises(ValueError, match=r"path: expected an existing weights file"):
        other.load_weights(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a weights file")
    with pytest.raises(ValueError, match=r"is not a weights file written by save_weights"):
        other.load_weights(tmp_path / "junk.pt")


def test_load_weights_refuses_arbitrary_pickles(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path = tmp_path / "evil.pt"
    torch.save({"body.0.linear.weight": Payload()}, path)
    with pytest.raises(ValueError, match=r"is not a weights file written by save_weights"):
        _model().load_weights(path)


def test_set_seed_and_optimizer_arguments():
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32 - 1\], got 'x'"):
        set_seed("x")
    with pytest.raises(ValueError, match=r"Adam: learning_rate must be a number > 0, got -1"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(TypeError, match=r"optimizer: expected a name such as 'adam'.* got 3"):
        _model(optimizer=3)
    with pytest.raises(TypeError, match=r"metrics: expected a list such as \['mae'\], got 'mae'"):
        _model(metrics="mae")
    with pytest.raises(ValueError, match=r"EarlyStopping: mode must be 'auto', 'min' or 'max', got 'down'"):
        callbacks.EarlyStopping(mode="down")


def test_checkpoint_filepath_field_missing_from_logs(tmp_path):
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "m-{val_loss:.2f}.pt"))
    with pytest.raises(ValueError, match=r"filepath '.*m-\{val_loss:.2f\}.pt' uses 'val_loss' which is not in the logs"):
        _model().fit(X, Y, epochs=1, verbose=0, callbacks=[checkpoint])
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match=r"layers: expected a list of layers, got str"):
        Sequential("dense")
