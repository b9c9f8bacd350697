"""Keras' ``utils`` namespace: ``berth.utils.set_seed`` as ``keras.utils.set_random_seed``
is used. The function lives in :mod:`berth.seeding`.

>>> import berth.utils, berth.seeding
>>> berth.utils.set_seed is berth.seeding.set_seed
True
"""
from .seeding import set_seed

__all__ = ["set_seed"]
