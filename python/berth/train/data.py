"""Checking and converting the arrays given to fit/evaluate/predict.

Every check names the argument, what it received and what to change.

>>> import numpy as np
>>> as_array([[1, 2]], "x").dtype
dtype('int64')
>>> check_same_length(np.zeros((4, 2)), np.zeros(3), "x", "y")
Traceback (most recent call last):
...
ValueError: x and y must have the same number of samples (first dimension): x has 4, y has 3
"""

import numpy as np
import torch

__all__ = ["as_array", "check_same_length", "check_features", "shape_text", "prepare_targets"]


def shape_text(shape):
    """``(-1, 10)``-style text for a shape, with -1 for any size.

    >>> shape_text((None, 10))
    '(-1, 10)'
    """
    dims = ["-1" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def as_array(value, argument):
    """A NumPy array from an array, a torch tensor or nested lists; a clear TypeError otherwise."""
    if value is None:
        raise TypeError(f"{argument}: expected an array, got None")
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (str, bytes, dict)):
        raise TypeError(f"{argument}: expected a numeric array, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError as error:
        raise TypeError(f"{argument}: expected a numeric array with rows of equal length, got {error}") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{argument}: expected a numeric array, got dtype {array.dtype}")
    if array.ndim == 0:
        raise TypeError(f"{argument}: expected an array with a batch dimension, got a scalar")
    return array


def check_same_length(x, y, x_name="x", y_name="y"):
    if len(x) != len(y):
        raise ValueError(
            f"{x_name} and {y_name} must have the same number of samples (first dimension): "
            f"{x_name} has {len(x)}, {y_name} has {len(y)}"
        )


def check_features(x, input_name, input_shape, argument="x"):
    """Check ``x``'s per-sample shape against the model input (None matches any size)."""
    sample = x.shape[1:]
    if len(sample) != len(input_shape) or any(d is not None and d != s for d, s in zip(input_shape, sample)):
        raise ValueError(
            f"{argument}: input '{input_name}' expects shape {shape_text((None,) + tuple(input_shape))}, "
            f"got {shape_text(x.shape)}"
        )


def prepare_targets(y, loss, output_shape, argument="y"):
    """Return ``y`` as a tensor shaped and typed for ``loss`` and a model with ``output_shape``."""
    out = tuple(output_shape)
    wanted = shape_text((None,) + out)
    if loss.target == "sparse":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 + len(out) - 1:
            hint = (" (one-hot rows: use loss='categorical_crossentropy')"
                    if y.ndim == 1 + len(out) and y.shape[-1] == out[-1] else "")
            raise ValueError(
                f"{argument}: loss '{loss.name}' expects integer class labels of shape "
                f"{shape_text((None,) + out[:-1])}, got {shape_text(y.shape)}{hint}"
            )
        if not np.issubdtype(y.dtype, np.integer) and not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"{argument}: loss '{loss.name}' expects integer class labels, got {y.dtype} values")
        if y.size and (y.min() < 0 or (out[-1] is not None and y.max() >= out[-1])):
            raise ValueError(
                f"{argument}: class labels must be in [0, {out[-1]}) for a model with {out[-1]} outputs, "
                f"got labels from {y.min()} to {y.max()}"
            )
        return torch.as_tensor(y.astype(np.int64))
    if loss.target == "any":
        return torch.as_tensor(y.astype(np.float32) if np.issubdtype(y.dtype, np.floating) else y)
    if y.ndim == len(out) and out[-1] == 1:
        y = y.reshape(y.shape + (1,))  # (n,) targets for a (n, 1) output, as Keras accepts
    if y.ndim != len(out) + 1 or any(d is not None and d != s for d, s in zip(out, y.shape[1:])):
        hint = ""
        if loss.target == "categorical" and y.ndim == 1:
            hint = " (integer class labels: use loss='sparse_categorical_crossentropy')"
        raise ValueError(
            f"{argument}: loss '{loss.name}' needs targets shaped like the model output {wanted}, "
            f"got {shape_text(y.shape)}{hint}"
        )
    if loss.target == "binary" and y.size and (y.min() < 0 or y.max() > 1):
        raise ValueError(
            f"{argument}: loss '{loss.name}' expects targets in [0, 1], got values from {y.min()} to {y.max()}"
        )
    return torch.as_tensor(y.astype(np.float32))
