"""Optimizers by Keras name and with Keras' defaults, built on ``torch.optim``.

``compile(optimizer="adam")`` uses :class:`Adam` with its defaults;
``compile(optimizer=optimizers.Adam(learning_rate=1e-2))`` sets the rate;
a ready ``torch.optim.Optimizer`` is used as it is.

>>> import torch
>>> opt = get("adam").build([torch.nn.Parameter(torch.zeros(2))])
>>> type(opt).__name__, opt.param_groups[0]["lr"]
('Adam', 0.001)
>>> get("adamm")
Traceback (most recent call last):
...
ValueError: optimizer: unknown name 'adamm'; did you mean 'adam'? Valid names: adam, adamw, rmsprop, sgd
"""

import torch

from .naming import lookup

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "get"]


class Optimizer:
    """Describes an optimizer; :meth:`build` makes the torch optimizer for given parameters."""

    name = "optimizer"

    def __init__(self, learning_rate):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
            raise ValueError(f"{type(self).__name__}: learning_rate must be a number > 0, got {learning_rate!r}")
        self.learning_rate = float(learning_rate)

    def build(self, params):
        raise NotImplementedError

    def get_config(self):
        return {"name": self.name, **{k: v for k, v in vars(self).items()}}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(learning_rate)
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def build(self, params):
        return torch.optim.SGD(params, lr=self.learning_rate, momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay)


class Adam(Optimizer):
    name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), bool(amsgrad)

    def build(self, params):
        return torch.optim.Adam(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2),
                                eps=self.epsilon, amsgrad=self.amsgrad)


class AdamW(Optimizer):
    name = "adamw"

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False):
        super().__init__(learning_rate)
        self.weight_decay = float(weight_decay)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), bool(amsgrad)

    def build(self, params):
        return torch.optim.AdamW(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                 weight_decay=self.weight_decay, amsgrad=self.amsgrad)


class RMSprop(Optimizer):
    name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        super().__init__(learning_rate)
        self.rho, self.momentum, self.epsilon, self.centered = float(rho), float(momentum), float(epsilon), bool(centered)

    def build(self, params):
        return torch.optim.RMSprop(params, lr=self.learning_rate, alpha=self.rho, eps=self.epsilon,
                                   momentum=self.momentum, centered=self.centered)


_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(optimizer):
    """Resolve a name, an :class:`Optimizer` or a ``torch.optim.Optimizer``."""
    if isinstance(optimizer, (Optimizer, torch.optim.Optimizer)):
        return optimizer
    if isinstance(optimizer, str):
        return lookup("optimizer", optimizer, _NAMES)()
    raise TypeError(
        f"optimizer: expected a name such as 'adam', berth.train.optimizers.Adam(learning_rate=...) "
        f"or a torch.optim.Optimizer, got {optimizer!r}"
    )
