"""Reproducible training: :func:`set_seed` seeds every random generator ``fit`` uses.

Also reachable as ``berth.set_seed`` and, as in Keras' ``keras.utils``, as
``berth.utils.set_seed``. This module must stay cheap to import: torch is imported inside
the function, so ``import berth`` never pulls torch in.
"""

import random

__all__ = ["set_seed"]


def set_seed(seed):
    """Seed Python, NumPy and torch so that ``fit`` is reproducible bit for bit on CPU.

    Call it before building the model (the seed fixes the initial weights) and
    again before ``fit`` if the same model object is trained twice.

    >>> import torch
    >>> set_seed(7); a = torch.rand(3)
    >>> set_seed(7); b = torch.rand(3)
    >>> bool(torch.equal(a, b))
    True
    >>> set_seed(-1)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an integer in [0, 2**32 - 1], got -1
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32 - 1], got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
