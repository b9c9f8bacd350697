"""Keras-style progress output for ``fit``: a bar with ETA (verbose=1) or a line per epoch (verbose=2).

>>> format_logs({"loss": 0.12345, "val_loss": 0.2})
'loss: 0.1235 - val_loss: 0.2000'
>>> bar(5, 10, width=10)
' 5/10 [====>.....]'
"""

import sys
import time

from .callbacks import Callback

__all__ = ["ProgressLogger", "format_logs", "bar"]


def format_logs(logs):
    """``'loss: 0.1235 - mae: 0.2000'`` from a logs dict."""
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) and abs(v) >= 1e-3 or v == 0 else f"{k}: {v:.4e}"
                      for k, v in logs.items())


def bar(done, total, width=30):
    """A ``[=====>....]`` bar for ``done`` of ``total`` steps."""
    digits = len(str(total))
    filled = int(width * done / total)
    arrow = "=" * max(filled - 1, 0) + (">" if done < total else "=") if filled else ""
    return f"{done:>{digits}}/{total} [{arrow:.<{width}}]"


def _duration(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


class ProgressLogger(Callback):
    """Prints training progress; redraws the bar at most every ``interval`` seconds."""

    def __init__(self, verbose=1, stream=None, interval=0.1):
        super().__init__()
        self.verbose, self.stream, self.interval = verbose, stream, interval

    def _write(self, text):
        if text.startswith("\r"):
            # Blank out what is left of a longer previous line.
            visible = len(text.rstrip("\n")) - 1
            text = text.rstrip("\n").ljust(getattr(self, "_width", 0) + 1) + ("\n" if text.endswith("\n") else "")
            self._width = 0 if text.endswith("\n") else visible
        stream = self.stream or sys.stdout
        stream.write(text)
        stream.flush()

    def uses_batch_hooks(self):
        return self.verbose == 1

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.perf_counter()
        if self.verbose == 1:
            self._write(f"Epoch {epoch + 1}/{self.params['epochs']}\n")

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        steps = self.params["steps"]
        if now - self.last < self.interval and batch + 1 < steps:
            return
        self.last = now
        eta = (now - self.start) / (batch + 1) * (steps - batch - 1)
        self._write(f"\r{bar(batch + 1, steps)} - ETA: {_duration(eta)} - {format_logs(logs or {})}")

    def on_epoch_end(self, epoch, logs=None):
        elapsed = time.perf_counter() - self.start
        steps = self.params["steps"]
        per_step = f"{elapsed / steps * 1e3:.0f}ms/step"
        text = f"{_duration(elapsed)} {per_step} - {format_logs(logs or {})}"
        if self.verbose == 1:
            self._write(f"\r{bar(steps, steps)} - {text}\n")
        else:
            self._write(f"Epoch {epoch + 1}/{self.params['epochs']} - {text}\n")
