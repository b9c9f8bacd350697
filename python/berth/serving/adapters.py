"""Embedding berth's protocol in an existing Flask or FastAPI app.

Thin glue: the raw body and headers go to the C codec (``berth._core.Service.handle``,
run with the GIL released, off the event loop for FastAPI), and its status, headers and
bytes come back unchanged. The endpoints are the same as ``python -m berth serve``'s::

    from berth.serving import fastapi_router, flask_blueprint
    app.include_router(fastapi_router("model.pt"))       # FastAPI
    app.register_blueprint(flask_blueprint("model.pt"))  # Flask

>>> service_for(42)
Traceback (most recent call last):
...
TypeError: expected a model file path or a berth.Model, got int
"""
import os
import warnings

from .. import _core

# Path prefixes of the protocol, each served by one catch-all route.
PROTOCOL_ROOTS = ("/v2", "/v1/models", "/metrics")


def service_for(model, name=None, warmup=True, optimize=True, **options):
    """A ready ``_core.Service`` for a model path or a loaded :class:`berth.Model`.

    A path is loaded as ``python -m berth serve`` does: optimized for inference where
    libtorch can (``optimize=False`` loads it as saved), and warm-up tunes the batch
    limit. options go to the service: max_batch_size, max_delay_ms, max_queue, batching,
    auth_token, timeout_ms.
    """
    import berth
    from .._model import load_for_serving
    if isinstance(model, (str, bytes, os.PathLike)):
        path = os.fsdecode(model)
        model, unoptimized = load_for_serving(path, optimize)
        if unoptimized:
            warnings.warn(f"serving {path!r} unoptimized: {unoptimized}", RuntimeWarning,
                          stacklevel=3)
    elif isinstance(model, berth.Model):
        path = model.path
    else:
        raise TypeError(f"expected a model file path or a berth.Model, got {type(model).__name__}")
    name = name or os.path.splitext(os.path.basename(path))[0] or "model"
    service = _core.Service(model, name, **options)
    if warmup:
        service.warmup()
    service.set_ready(True)
    return service


def _handle(service, method, path, body, headers):
    return service.handle(method, path, body, headers.get("content-type"),
                          headers.get("authorization"),
                          headers.get("inference-header-content-length"))


def fastapi_router(model, name=None, **options):
    """An ``APIRouter`` serving ``model`` (path or berth.Model); see the module docstring.

    The C codec runs in Starlette's thread pool, so the event loop never blocks.
    ``router.berth_service`` is the underlying service (``metrics()``, ``stats()``).
    """
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    service = service_for(model, name, **options)
    router = APIRouter()

    def make_endpoint(root):
        async def endpoint(request):
            rest = request.path_params.get("rest")
            path = root if rest is None else f"{root}/{rest}"
            body = await request.body()
            status, headers, out = await run_in_threadpool(
                _handle, service, request.method, path, body, request.headers)
            return Response(content=out, status_code=status, headers=dict(headers))
        return endpoint

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    for root in PROTOCOL_ROOTS:
        router.add_route(root, make_endpoint(root), methods=methods, include_in_schema=False)
        router.add_route(root + "/{rest:path}", make_endpoint(root), methods=methods,
                         include_in_schema=False)
    router.berth_service = service
    return router


def flask_blueprint(model, name=None, blueprint_name="berth", **options):
    """A Flask ``Blueprint`` serving ``model`` (path or berth.Model); see the module docstring.

    ``blueprint.berth_service`` is the underlying service.
    """
    from flask import Blueprint, Response, request

    service = service_for(model, name, **options)
    blueprint = Blueprint(blueprint_name, __name__)

    def make_view(root):
        def view(rest=None):
            path = root if rest is None else f"{root}/{rest}"
            status, headers, out = _handle(service, request.method, path, request.get_data(),
                                           request.headers)
            return Response(out, status=status, headers=headers)
        view.__name__ = "berth" + root.replace("/", "_")
        return view

    methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]
    for root in PROTOCOL_ROOTS:
        view = make_view(root)
        blueprint.add_url_rule(root, view.__name__, view, methods=methods)
        blueprint.add_url_rule(root + "/<path:rest>", view.__name__ + "_rest", view,
                               methods=methods)
    blueprint.berth_service = service
    return blueprint
