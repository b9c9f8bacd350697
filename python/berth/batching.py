"""Dynamic batching for in-process callers: :func:`batcher`."""
from . import _core


_DEFAULTS = _core.SERVING_DEFAULTS  # the C batcher's defaults, defined once in C


def batcher(model, max_batch_size=_DEFAULTS["max_batch_size"],
            max_delay_ms=_DEFAULTS["max_delay_ms"], max_queue=_DEFAULTS["max_queue"],
            batching=None, workers=_DEFAULTS["workers"]):
    """A dynamic batcher over ``model`` (a :class:`berth.Model`), run in C.

    Concurrent ``predict(*inputs, timeout=None)`` calls from any thread are queued in C,
    concatenated along the first (batch) dimension up to ``max_batch_size`` rows or until
    the oldest has waited ``max_delay_ms``, run as one forward, and split back: each caller
    gets its own rows. Callers release the GIL while they wait. A full queue
    (``max_queue`` waiting requests) raises :class:`berth.Overloaded` at once; a request
    that waits longer than ``timeout`` seconds raises :class:`TimeoutError`.

    Only models whose batch dimension is known are batched: the signature's inputs and
    outputs all start with -1 (berth.json), or ``batching=True``. Others run one request
    per forward. ``workers`` threads run forwards concurrently (each forward still uses
    libtorch's intra-op threads). ``stats()`` returns the counters and histograms; ``close()`` (or a
    ``with`` block) finishes queued requests and stops the thread.

    >>> batcher(object())
    Traceback (most recent call last):
    ...
    TypeError: expected a berth.Model, got object
    """
    return _core.Batcher(model, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                         max_queue=max_queue, batching=batching, workers=workers)
