"""Callbacks behave as Keras documents them."""

import csv

import numpy as np
import pytest

from berth.train import Sequential, callbacks, layers, load_model, optimizers
from berth.train.saving import read_metadata
from berth.utils import set_seed

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 5)).astype(np.float32)
Y = (X.sum(axis=1, keepdims=True) > 0).astype(np.float32)


def _model(learning_rate=0.01):
    set_seed(0)
    model = Sequential([layers.Dense(8, activation="relu", input_shape=(5,)), layers.Dense(1)])
    model.compile(optimizer=optimizers.SGD(learning_rate=learning_rate), loss="mse")
    return model


def _scripted(values):
    """A callback that sets logs['score'] to values[epoch], so monitored values are known exactly."""
    return callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(score=values[epoch]))



def test_early_stopping_stops_after_patience_and_restores_best_weights():
    model = _model()
    snapshots = []
    keep = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    stop = callbacks.EarlyStopping(monitor="score", patience=2, restore_best_weights=True)
    scores = [5.0, 4.0, 3.0, 3.5, 3.2, 1.0, 0.5]
    history = model.fit(X, Y, epochs=7, verbose=0, callbacks=[_scripted(scores), keep, stop])
    # best at epoch 2; epochs 3 and 4 do not improve -> stop after epoch 4.
    assert history.epoch == [0, 1, 2, 3, 4]
    assert stop.stopped_epoch == 4 and stop.best_epoch == 2 and stop.best == 3.0
    for restored, best in zip(model.get_weights(), snapshots[2]):
        np.testing.assert_array_equal(restored, best)
    assert any(not np.array_equal(a, b) for a, b in zip(snapshots[4], snapshots[2]))


def test_early_stopping_on_real_validation_loss_that_cannot_improve():
    model = _model(learning_rate=1e-12)  # loss stays flat: no epoch improves on the first
    history = model.fit(X, Y, epochs=20, validation_split=0.25, verbose=0,
                        callbacks=[callbacks.EarlyStopping(patience=3)])
    assert len(history.epoch) == 4


def test_early_stopping_without_restore_keeps_last_weights_and_mode_max():
    model = _model()
    last = []
    keep = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: last.append(model.get_weights()))
    stop = callbacks.EarlyStopping(monitor="score", mode="max", patience=1, min_delta=0.1)
    history = model.fit(X, Y, epochs=6, verbose=0, callbacks=[_scripted([0.5, 0.55, 0.7, 0.75, 0.9, 1.0]), keep, stop])
    # 0.55 and 0.75 are not better by min_delta=0.1 -> stop at epoch 1.
    assert history.epoch == [0, 1]
    for now, final in zip(model.get_weights(), last[-1]):
        np.testing.assert_array_equal(now, final)


def test_model_checkpoint_save_best_only_writes_the_best_model(tmp_path):
    model = _model()
    snapshots = []
    keep = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()))
    best_path = tmp_path / "best.pt"
    checkpoint = callbacks.ModelCheckpoint(best_path, monitor="score", save_best_only=True)
    every = callbacks.ModelCheckpoint(str(tmp_path / "epoch-{epoch:02d}-{score:.1f}.pt"), monitor="score",
                                      save_best_only=True)
    model.fit(X, Y, epochs=5, verbose=0, callbacks=[_scripted([3.0, 2.0, 2.5, 1.0, 1.5]), keep, checkpoint, every])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "epoch-01-3.0.pt", "epoch-02-2.0.pt", "epoch-04-1.0.pt"]
    restored = load_model(best_path)
    for saved, best in zip(restored.get_weights(), snapshots[3]):
        np.testing.assert_array_equal(saved, best)
    meta = read_metadata(best_path)["training"]  # a checkpoint records the epoch it was taken at
    assert meta["epochs"] == 4 and meta["metrics"]["score"] == 1.0


def test_model_checkpoint_weights_only_every_epoch(tmp_path):
    model = _model()
    path = tmp_path / "w-{epoch}.pt"
    model.fit(X, Y, epochs=3, verbose=0, callbacks=[callbacks.ModelCheckpoint(str(path), save_weights_only=True)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w-1.pt", "w-2.pt", "w-3.pt"]
    clone = _model()
    clone.load_weights(tmp_path / "w-3.pt")
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_reduce_lr_on_plateau_reduces_after_patience_with_cooldown():
    model = _model(learning_rate=0.1)
    reduce = callbacks.ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    flat = [1.0] * 8
    history = model.fit(X, Y, epochs=8, verbose=0, callbacks=[_scripted(flat), reduce])
    # Logged rate is the one used during that epoch. Epoch 0 sets the best; epochs 1-2 wait -> cut.
    # Epoch 3 is the cooldown epoch (wait reset, then counts 1), epoch 4 -> cut; epoch 6 -> cut, floored at min_lr.
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02])
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(0.02)


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    model = _model()
    path = tmp_path / "log.csv"
    history = model.fit(X, Y, epochs=3, validation_split=0.25, verbose=0, callbacks=[callbacks.CSVLogger(path)])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history.history["val_loss"])
    model.fit(X, Y, epochs=2, verbose=0, validation_split=0.25, callbacks=[callbacks.CSVLogger(path, append=True)])
    with open(path, newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 5


def test_terminate_on_nan_stops_at_the_first_bad_batch(capsys):
    model = _model()
    model.compile(optimizer="sgd", loss=lambda y_true, y_pred: ((y_true - y_pred) ** 2).mean() / 0.0)
    batches = []
    count = callbacks.LambdaCallback(on_batch_end=lambda batch, logs: batches.append(logs["loss"]))
    history = model.fit(X, Y, epochs=5, batch_size=8, verbose=0, callbacks=[count, callbacks.TerminateOnNaN()])
    assert len(batches) == 1 and not np.isfinite(batches[0])
    assert len(history.epoch) == 1
    assert "invalid loss" in capsys.readouterr().err


def test_lambda_callback_hooks_run_in_order():
    model = _model()
    events = []
    hooks = callbacks.LambdaCallback(
        on_train_begin=lambda logs: events.append("train_begin"),
        on_epoch_begin=lambda epoch, logs: events.append(f"epoch_begin {epoch}"),
        on_batch_begin=lambda batch, logs: events.append(f"batch_begin {batch}"),
        on_batch_end=lambda batch, logs: events.append(f"batch_end {batch} {sorted(logs)}"),
        on_epoch_end=lambda epoch, logs: events.append(f"epoch_end {epoch} {sorted(logs)}"),
        on_train_end=lambda logs: events.append("train_end"),
    )
    model.fit(X[:16], Y[:16], epochs=1, batch_size=8, verbose=0, callbacks=[hooks])
    assert events == ["train_begin", "epoch_begin 0", "batch_begin 0", "batch_end 0 ['loss']", "batch_begin 1",
                      "batch_end 1 ['loss']", "epoch_end 0 ['loss']", "train_end"]
    with pytest.raises(TypeError, match="unknown hook 'on_epoch_ends'; did you mean 'on_epoch_end'"):
        callbacks.LambdaCallback(on_epoch_ends=print)


def test_custom_callback_can_stop_training():
    class StopAtTwo(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    history = _model().fit(X, Y, epochs=10, verbose=0, callbacks=[StopAtTwo()])
    assert history.epoch == [0, 1]


def test_missing_monitor_warns_with_available_keys():
    with pytest.warns(UserWarning, match=r"monitor 'val_loss' is not in the logs \(available: loss\)"):
        _model().fit(X, Y, epochs=1, verbose=0, callbacks=[callbacks.EarlyStopping()])
