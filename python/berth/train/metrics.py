"""Metrics reported during fit/evaluate, by Keras name.

A metric maps ``(y_true, y_pred)`` to the batch mean; ``fit`` averages these
over the epoch weighted by batch size, as Keras does. ``"accuracy"`` picks the
accuracy that fits the loss (binary, categorical or sparse categorical).

>>> import torch
>>> from berth.train import losses
>>> acc = get("accuracy", losses.get("sparse_categorical_crossentropy"))
>>> acc.name, float(acc(torch.tensor([1, 0]), torch.tensor([[0.2, 0.8], [0.3, 0.7]])))
('accuracy', 0.5)
"""

import torch.nn.functional as F

from .naming import lookup

__all__ = ["Metric", "get"]


class Metric:
    """A named batch metric: ``metric(y_true, y_pred) -> 0-d tensor``."""

    def __init__(self, name, function):
        self.name = name
        self.function = function

    def __call__(self, y_true, y_pred):
        return self.function(y_true, y_pred)

    def __repr__(self):
        return f"Metric({self.name!r})"


def _mae(y_true, y_pred):
    return F.l1_loss(y_pred, y_true)


def _mse(y_true, y_pred):
    return F.mse_loss(y_pred, y_true)


def _binary_accuracy(threshold):
    def accuracy(y_true, y_pred):
        return ((y_pred > threshold) == (y_true > 0.5)).float().mean()
    return accuracy


def _categorical_accuracy(y_true, y_pred):
    return (y_pred.argmax(dim=-1) == y_true.argmax(dim=-1)).float().mean()


def _sparse_categorical_accuracy(y_true, y_pred):
    return (y_pred.argmax(dim=-1) == y_true.reshape(y_pred.shape[:-1])).float().mean()


_ACCURACY = {"binary": "binary_accuracy", "categorical": "categorical_accuracy", "sparse": "sparse_categorical_accuracy"}
_NAMES = {
    "mae": "mae", "mean_absolute_error": "mae", "mse": "mse", "mean_squared_error": "mse",
    "accuracy": "accuracy", "acc": "accuracy", "binary_accuracy": "binary_accuracy",
    "categorical_accuracy": "categorical_accuracy", "sparse_categorical_accuracy": "sparse_categorical_accuracy",
}


def get(metric, loss, output_shape=None):
    """Resolve ``metric`` (a name or a callable(y_true, y_pred)) for a model compiled with ``loss``."""
    if callable(metric) and not isinstance(metric, str):
        return metric if isinstance(metric, Metric) else Metric(getattr(metric, "__name__", "metric"), metric)
    if not isinstance(metric, str):
        raise TypeError(f"metrics: expected metric names such as 'mae' or callables, got {metric!r}")
    kind = lookup("metrics", metric, _NAMES)
    if kind == "accuracy":
        target = loss.target
        if target not in _ACCURACY:
            # Keras' rule when the loss does not say: one output unit means binary.
            target = "binary" if output_shape and output_shape[-1] == 1 else "categorical"
        kind = _ACCURACY[target]
    if kind == "binary_accuracy":
        function = _binary_accuracy(0.0 if loss.from_logits else 0.5)
    else:
        function = {"mae": _mae, "mse": _mse, "categorical_accuracy": _categorical_accuracy,
                    "sparse_categorical_accuracy": _sparse_categorical_accuracy}[kind]
    return Metric(metric, function)
