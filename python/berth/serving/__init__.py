"""Serving berth models: a C HTTP server, a C batcher, and Flask/FastAPI adapters.

All of them speak the Open Inference Protocol v2 and KServe v1 through one codec written
in C (``berth._core.Service``); Python only parses arguments and waits for signals.

- ``python -m berth serve model.pt``: see :func:`main`.
- ``model.batcher(...)``: see :func:`batcher`.
- ``app.include_router(fastapi_router("model.pt"))`` and
  ``app.register_blueprint(flask_blueprint("model.pt"))``: see :mod:`berth.serving.adapters`.

>>> from berth.serving import main, batcher, fastapi_router, flask_blueprint
>>> callable(main) and callable(batcher)
True
"""
from .adapters import fastapi_router, flask_blueprint
from ..batching import batcher
from .cli import main

__all__ = ["batcher", "fastapi_router", "flask_blueprint", "main"]
