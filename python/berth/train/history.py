"""The :class:`History` that ``fit`` returns.

>>> h = History()
>>> h.on_train_begin(); h.on_epoch_end(0, {"loss": 1.0}); h.on_epoch_end(1, {"loss": 0.5})
>>> h.history, h.epoch
({'loss': [1.0, 0.5]}, [0, 1])
"""

from .callbacks import Callback

__all__ = ["History"]


class History(Callback):
    """Records every epoch's logs: ``history.history["loss"][i]`` is epoch ``i``'s mean loss."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
