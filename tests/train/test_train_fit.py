"""compile / fit / evaluate / predict: learning, Keras semantics, reproducibility, config and weights."""

import numpy as np
import pytest
import torch

from berth.train import Sequential, callbacks, layers, load_model, optimizers
from berth import set_seed


def _regression(n=512, features=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    w = rng.standard_normal((features, 1)).astype(np.float32)
    y = np.tanh(x @ w) + 0.5 * x[:, :1] ** 2
    return x, y.astype(np.float32)


def _blobs(n=600, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, 4)) * 3
    return (centres[labels] + rng.standard_normal((n, 4))).astype(np.float32), labels


def _seed_model(features=10):
    return Sequential([
        layers.Dense(64, activation="relu", input_shape=(features,)),
        layers.Dense(32, activation="relu"),
        layers.Dense(1),
    ])


def test_regression_loss_drops_below_threshold():
    x, y = _regression()
    set_seed(0)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=25, batch_size=32, verbose=0)
    baseline = float(np.mean((y - y.mean()) ** 2))  # loss of predicting the mean
    assert history.history["loss"][0] > history.history["loss"][-1]
    # Threshold: under 10% of the targets' variance (the loss of always predicting the mean).
    assert history.history["loss"][-1] < 0.1 * baseline
    assert model.evaluate(x, y, verbose=0)[0] < 0.1 * baseline


@pytest.mark.parametrize("loss,labels", [
    ("sparse_categorical_crossentropy", "integers"),
    ("categorical_crossentropy", "one_hot"),
])
def test_multiclass_classification_reaches_high_accuracy(loss, labels):
    x, y = _blobs()
    if labels == "one_hot":
        y = np.eye(3, dtype=np.float32)[y]
    set_seed(0)
    model = Sequential([layers.Dense(16, activation="relu", input_shape=(4,)), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    assert history.history["loss"][-1] < 0.3
    probabilities = model.predict(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_binary_classification_uses_binary_accuracy():
    x, labels = _blobs(classes=2)
    set_seed(0)
    model = Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, labels, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.3
    loss, accuracy = model.evaluate(x, labels, verbose=0)
    # accuracy as Keras' binary_accuracy: output > 0.5 compared with the label.
    assert accuracy == pytest.approx(float(np.mean((model.predict(x)[:, 0] > 0.5) == labels)), abs=1e-6)
    assert accuracy > 0.9


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_other_regression_losses_learn(loss):
    x, y = _regression(n=256)
    set_seed(1)
    model = _seed_model()
    model.compile(optimizer="adam", loss=loss)
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]  # measured: mae 0.41, huber 0.24


def test_fit_is_exactly_a_torch_training_loop():
    """No shuffle, SGD: fit must update weights exactly as the plain torch loop does."""
    x, y = _regression(n=96)
    set_seed(5)
    model = _seed_model()
    reference = [p.detach().clone() for p in model.parameters()]
    torch_model = torch.nn.Sequential(torch.nn.Linear(10, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                                      torch.nn.ReLU(), torch.nn.Linear(32, 1))
    with torch.no_grad():
        for p, r in zip(torch_model.parameters(), reference):
            p.copy_(r)
    optimizer = torch.optim.SGD(torch_model.parameters(), lr=0.05)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(2):
        for start in range(0, 96, 40):  # 40, 40, then a last batch of 16
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(torch_model(xt[start:start + 40]), yt[start:start + 40]).backward()
            optimizer.step()
    model.compile(optimizer=optimizers.SGD(learning_rate=0.05), loss="mse")
    model.fit(x, y, epochs=2, batch_size=40, shuffle=False, verbose=0)
    for ours, theirs in zip(model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_validation_split_takes_last_samples_before_shuffling():
    x, y = _regression(n=10)
    set_seed(2)
    model = _seed_model()
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    seen = []
    record = callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(batch))
    history = model.fit(x, y, epochs=1, batch_size=2, validation_split=0.25, verbose=0, callbacks=[record])
    # Keras: split_at = floor(10 * 0.75) = 7 -> 7 training samples (4 batches of 2), the last 3 validate.
    assert seen == [0, 1, 2, 3]
    val_loss, val_mae = model.evaluate(x[7:], y[7:], verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(val_loss, rel=1e-6)
    assert history.history["val_mae"][0] == pytest.approx(val_mae, rel=1e-6)
    assert sorted(history.history) == ["loss", "mae", "val_loss", "val_mae"]


def test_validation_split_never_trains_on_the_held_out_samples():
    """Changing only the held-out targets must not change the trained weights."""
    x, y = _regression(n=20)
    results = []
    for tail in (0.0, 100.0):
        y_changed = y.copy()
        y_changed[15:] = tail
        set_seed(4)
        model = _seed_model()
        model.compile(optimizer="adam", loss="mse")
        model.fit(x, y_changed, epochs=2, batch_size=4, validation_split=0.25, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_validation_data_is_reported_as_val_metrics():
    x, y = _regression(n=64)
    set_seed(0)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x[:48], y[:48], validation_data=(x[48:], y[48:]), epochs=2, verbose=0)
    assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(x[48:], y[48:], verbose=0), rel=1e-6)


def test_set_seed_makes_fit_reproducible_bit_for_bit():
    x, y = _regression(n=128)

    def run(seed):
        set_seed(seed)
        model = Sequential([layers.Dense(32, activation="relu", input_shape=(10,)), layers.Dropout(0.3),
                            layers.BatchNormalization(), layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        history = model.fit(x, y, epochs=3, batch_size=16, validation_split=0.2, verbose=0)
        return model.get_weights(), history.history

    weights_a, history_a = run(11)
    weights_b, history_b = run(11)
    weights_c, _ = run(12)
    assert history_a == history_b
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(weights_a, weights_c))


def test_initial_epoch_and_history_contents():
    x, y = _regression(n=32)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(x, y, epochs=5, initial_epoch=2, verbose=0)
    assert history.epoch == [2, 3, 4]
    assert len(history.history["loss"]) == 3
    assert model.history is history


def test_verbose_modes(capsys):
    x, y = _regression(n=64)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert capsys.readouterr().out == ""
    model.fit(x, y, epochs=2, batch_size=16, verbose=2, validation_split=0.25)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and "val_mae:" in lines[1]
    model.fit(x, y, epochs=1, batch_size=16, verbose=1)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/1\n")
    assert "4/4 [==============================]" in out and "loss:" in out and "mae:" in out


def test_evaluate_and_predict_return_keras_shapes():
    x, y = _regression(n=40)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae", "mse"])
    loss, mae, mse = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(mse, rel=1e-6)
    assert model.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx({"loss": loss, "mae": mae, "mse": mse})
    prediction = model.predict(x.astype(np.float64), batch_size=7)
    assert prediction.dtype == np.float32 and prediction.shape == (40, 1)
    assert np.mean(np.abs(prediction - y)) == pytest.approx(mae, rel=1e-5)
    model.compile(optimizer="adam", loss="mse")
    assert isinstance(model.evaluate(x, y, verbose=0), float)


@pytest.mark.parametrize("name,cls,lr", [("sgd", torch.optim.SGD, 0.01), ("adam", torch.optim.Adam, 0.001),
                                         ("adamw", torch.optim.AdamW, 0.001), ("rmsprop", torch.optim.RMSprop, 0.001)])
def test_optimizers_by_name_use_keras_defaults(name, cls, lr):
    model = _seed_model()
    model.compile(optimizer=name, loss="mse")
    assert type(model.optimizer) is cls
    assert model.optimizer.param_groups[0]["lr"] == lr


def test_optimizer_objects_and_torch_optimizers():
    model = _seed_model()
    model.compile(optimizer=optimizers.Adam(learning_rate=0.02), loss="mse")
    assert model.optimizer.param_groups[0]["lr"] == 0.02
    own = torch.optim.Adagrad(model.parameters(), lr=0.1)
    model.compile(optimizer=own, loss="mse")
    x, y = _regression(n=32)
    before = model.get_weights()
    model.fit(x, y, epochs=1, verbose=0)
    assert model.optimizer is own
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_callable_losses_and_metrics():
    x, y = _regression(n=64)

    def doubled_mse(y_true, y_pred):
        return 2 * ((y_true - y_pred) ** 2).mean()

    def max_error(y_true, y_pred):
        return (y_true - y_pred).abs().max()

    set_seed(0)
    model = _seed_model()
    model.compile(optimizer="adam", loss=doubled_mse, metrics=["mse", max_error])
    history = model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    assert history.history["loss"][0] == pytest.approx(2 * history.history["mse"][0], rel=1e-5)
    assert "max_error" in history.history
    model.compile(optimizer="adam", loss=torch.nn.L1Loss(), metrics=["mae"])  # torch order (input, target)
    loss, mae = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(mae, rel=1e-6)


def test_deferred_build_from_first_fit():
    x, y = _regression(n=32, features=6)
    model = Sequential([layers.Dense(4, activation="relu"), layers.Dense(1)])
    assert not model.built
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.input_shape == (6,)
    assert model.predict(x).shape == (32, 1)


def test_config_round_trip_and_weights(tmp_path):
    model = Sequential([
        layers.Input(shape=(8, 8, 3)),
        layers.Conv2D(4, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.BatchNormalization(),
        layers.Flatten(),
        layers.Dropout(0.2),
        layers.Dense(3, activation="softmax", name="probabilities"),
    ])
    config = model.get_config()
    clone = Sequential.from_config(config)
    assert clone.get_config() == config
    assert [type(layer) for layer in clone.layers] == [type(layer) for layer in model.layers]
    path = tmp_path / "weights.pt"
    model.save_weights(path)
    clone.load_weights(path)
    x = np.random.default_rng(0).standard_normal((5, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x), model.predict(x))
    seq = Sequential([layers.Embedding(30, 4, input_shape=(5,)), layers.LSTM(3, return_sequences=True),
                      layers.Conv1D(2, 2), layers.Reshape((-1,)), layers.Activation("relu")])
    assert Sequential.from_config(seq.get_config()).get_config() == seq.get_config()


def test_load_model_restores_a_trainable_model(tmp_path):
    x, y = _regression(n=64)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(tmp_path / "m.pt")
    restored = load_model(tmp_path / "m.pt")
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))
    restored.compile(optimizer="adam", loss="mse")
    restored.fit(x, y, epochs=1, verbose=0)


def test_saved_metadata_records_training(tmp_path):
    import berth.train.saving as saving

    x, y = _regression(n=64)
    model = _seed_model()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    history = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0)
    model.save(tmp_path / "m.pt")
    meta = saving.read_metadata(tmp_path / "m.pt")
    assert meta["berth_format"] == 1 and meta["batch_dim"] == 0
    assert meta["training"]["loss"] == "mse" and meta["training"]["optimizer"] == "adam"
    assert meta["training"]["epochs"] == 3
    assert meta["training"]["metrics"] == pytest.approx({k: v[-1] for k, v in history.history.items()})
    assert meta["model"] == {"class": "Sequential", "config": model.get_config()}
    assert meta["torch_version"] == torch.__version__
    assert meta["created"].endswith("Z")


def test_sparse_labels_per_timestep():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64)  # one label per timestep
    set_seed(0)
    model = Sequential([layers.LSTM(8, return_sequences=True, input_shape=(5, 3)),
                        layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    p = model.predict(x)
    expected = -np.mean(np.log(np.take_along_axis(p, y[..., None], axis=-1)))
    assert model.evaluate(x, y, verbose=0)[0] == pytest.approx(expected, rel=1e-5)
    assert history.history["accuracy"][0] <= 1.0
