"""Keras activation names mapped to TorchScript-friendly torch modules.

>>> get("relu")
ReLU()
>>> get(None)
Identity()
>>> get("sofmax")
Traceback (most recent call last):
...
ValueError: activation: unknown name 'sofmax'; did you mean 'softmax'? Valid names: elu, exponential, gelu, hard_sigmoid, leaky_relu, linear, relu, relu6, selu, sigmoid, silu, softmax, softplus, softsign, swish, tanh
"""

import torch
from torch import nn

from .naming import lookup

__all__ = ["get", "NAMES"]


class Exponential(nn.Module):
    """``exp(x)``, Keras' ``exponential`` activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)


_FACTORIES = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=-1),
    "softplus": nn.Softplus,
    "softsign": nn.Softsign,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras' default negative slope
    "hard_sigmoid": nn.Hardsigmoid,
    "exponential": Exponential,
}

NAMES = tuple(sorted(_FACTORIES))


def get(name, argument="activation"):
    """Return a fresh module for the activation ``name`` (``None`` means linear)."""
    if name is None:
        return nn.Identity()
    return lookup(argument, name, _FACTORIES)()
