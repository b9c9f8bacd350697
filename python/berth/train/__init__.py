"""Keras-style training on torch: build, compile, fit, evaluate, save for the C core.

>>> from berth.train import Sequential, layers
>>> model = Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(1)])
>>> [layer.name for layer in model.layers]
['dense', 'dense_1']
"""

from . import callbacks, layers, losses, metrics, optimizers
from .history import History
from .loading import load_model
from .sequential import Sequential

__all__ = ["Sequential", "History", "load_model", "layers", "callbacks", "losses", "metrics", "optimizers"]
