"""Loss functions by Keras name, with the target each one expects.

A loss is called as ``loss(y_true, y_pred)`` (Keras' order) and returns the
batch mean. Cross-entropies take probabilities (a sigmoid/softmax output), as
Keras does by default; pass ``from_logits=True`` for raw scores.

>>> import torch
>>> float(get("mse")(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])))
2.5
>>> get("binary_crossentropy").target
'binary'
>>> get("sparse_categorical_crossentopy")
Traceback (most recent call last):
...
ValueError: loss: unknown name 'sparse_categorical_crossentopy'; did you mean 'sparse_categorical_crossentropy'? Valid names: binary_crossentropy, categorical_crossentropy, huber, mae, mean_absolute_error, mean_squared_error, mse, sparse_categorical_crossentropy
"""

import torch
import torch.nn.functional as F

from .naming import lookup

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "Huber", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "get"]

EPSILON = 1e-7  # Keras' backend epsilon used to clip probabilities


class Loss:
    """A named loss; ``target`` is 'regression', 'binary', 'categorical' or 'sparse'."""

    name = "loss"
    target = "regression"
    from_logits = False

    def __call__(self, y_true, y_pred):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}()"


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def __call__(self, y_true, y_pred):
        return F.mse_loss(y_pred, y_true)


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def __call__(self, y_true, y_pred):
        return F.l1_loss(y_pred, y_true)


class Huber(Loss):
    name = "huber"

    def __init__(self, delta=1.0):
        if not delta > 0:
            raise ValueError(f"Huber: delta must be > 0, got {delta!r}")
        self.delta = float(delta)

    def __call__(self, y_true, y_pred):
        return F.huber_loss(y_pred, y_true, delta=self.delta)


class _Crossentropy(Loss):
    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)


class BinaryCrossentropy(_Crossentropy):
    name = "binary_crossentropy"
    target = "binary"

    def __call__(self, y_true, y_pred):
        if self.from_logits:
            return F.binary_cross_entropy_with_logits(y_pred, y_true)
        return F.binary_cross_entropy(y_pred.clamp(EPSILON, 1.0 - EPSILON), y_true)


def _log_probabilities(y_pred, from_logits):
    if from_logits:
        return F.log_softmax(y_pred, dim=-1)
    p = y_pred / y_pred.sum(dim=-1, keepdim=True)
    return torch.log(p.clamp(EPSILON, 1.0 - EPSILON))


class CategoricalCrossentropy(_Crossentropy):
    name = "categorical_crossentropy"
    target = "categorical"

    def __call__(self, y_true, y_pred):
        return -(y_true * _log_probabilities(y_pred, self.from_logits)).sum(dim=-1).mean()


class SparseCategoricalCrossentropy(_Crossentropy):
    name = "sparse_categorical_crossentropy"
    target = "sparse"

    def __call__(self, y_true, y_pred):
        log_p = _log_probabilities(y_pred, self.from_logits)
        # One class axis last, any number of leading axes (e.g. one label per timestep).
        return F.nll_loss(log_p.reshape(-1, log_p.shape[-1]), y_true.reshape(-1))


class CallableLoss(Loss):
    """Wraps a user's callable: torch loss modules are called ``(y_pred, y_true)``, functions ``(y_true, y_pred)``."""

    def __init__(self, function):
        self.function = function
        self.torch_order = isinstance(function, torch.nn.Module)
        self.name = getattr(function, "__name__", type(function).__name__)
        self.target = getattr(function, "target", "any")

    def __call__(self, y_true, y_pred):
        if self.torch_order:
            return self.function(y_pred, y_true)
        return self.function(y_true, y_pred)


_NAMES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(loss):
    """Resolve a loss name, a :class:`Loss`, or any callable into a :class:`Loss`."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        resolved = lookup("loss", loss, _NAMES)()
        resolved.name = loss.lower()  # report the loss in the user's own words
        return resolved
    if callable(loss):
        return CallableLoss(loss)
    raise TypeError(f"loss: expected a loss name such as 'mse' or a callable(y_true, y_pred), got {loss!r}")
