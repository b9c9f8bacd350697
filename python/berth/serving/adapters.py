"""Embedding berth's protocol in an existing Flask or FastAPI app.

Thin glue: the raw body and headers go to the C codec (``berth._core.Service.handle``,
run with the GIL released, off the event loop for FastAPI), and its status, headers and
bytes come back unchanged. The endpoints are the same as ``python -m berth serve``'s::

    from berth.serving import fastapi_router, flask_blueprint
    app.include_router(fastapi_router("model.pt"))       # FastAPI
    app.register_blueprint(flask_blueprint("model.pt"))  # Flask

Several models in one app: one router or blueprint per model, or one for a whole model
repository (``fastapi_router("models/")``: every model and version its config.toml
selects, loaded as ``python -m berth serve models/`` does, with control mode none). Each
answers only its own models' paths; the shared ones (``SHARED_PATHS``) answer for all the
app's models, and a name none of them serves gets a 404 that lists the names served.

>>> service_for(42)
Traceback (most recent call last):
...
TypeError: expected a model file path or a berth.Model, got int
"""
import json
import os
import warnings

from .. import _core

# Paths every model of an app shares: the first router or blueprint that matches answers
# them for all the app's models (readiness is all of them ready; statistics list each).
SHARED_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/stats", "/metrics")
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


class Served:
    """The models one router or blueprint serves: their URL names and the
    ``_core.Service`` (one model) or ``_core.Registry`` (a repository) that answers them."""

    def __init__(self, names, service, controller=None):
        self.names = tuple(names)
        self.service = service
        self.controller = controller  # keeps a repository's versions open


def model_paths(name):
    """The paths a model's own router or blueprint answers (its name, nothing else).

    >>> model_paths("seed")
    ('/v2/models/seed', '/v1/models/seed', '/v1/models/seed:predict')
    """
    return (f"/v2/models/{name}", f"/v1/models/{name}", f"/v1/models/{name}:predict")


def name_in_path(path):
    """The model name a /v2/models/... or /v1/models/... path asks for, else None.

    >>> name_in_path("/v2/models/a/versions/1/infer"), name_in_path("/v1/models/b:predict")
    ('a', 'b')
    """
    if path.startswith("/v2/models/"):
        return path[len("/v2/models/"):].split("/", 1)[0]
    if path.startswith("/v1/models/"):
        return path[len("/v1/models/"):].split("/", 1)[0].split(":", 1)[0]
    return None


def shared_answer(served, method, path, body, headers):
    """The answer to a shared path for every model of the app (served, in order)."""
    first = served[0].service
    if path == "/v2/health/ready":
        answers = [_handle(s.service, method, path, body, headers) for s in served]
        return next((a for a in answers if a[0] != 200), answers[0])
    if path == "/v2/models/stats":  # read back and merged: asked for uncompressed
        answers = [_handle(s.service, method, path, body, headers, compress=False)
                   for s in served]
        bad = next((a for a in answers if a[0] != 200), None)
        if bad:
            return bad
        stats = [m for a in answers for m in json.loads(a[2])["model_stats"]]
        return 200, [("Content-Type", "application/json")], json.dumps(
            {"model_stats": stats}, separators=(",", ":")).encode()
    return _handle(first, method, path, body, headers)


def not_found(served, path):
    """404 for a model name no router or blueprint of the app serves."""
    names = ", ".join(f"'{name}'" for s in served for name in s.names)
    message = f"model '{name_in_path(path)}' not found: this app serves {names}"
    return 404, [("Content-Type", "application/json")], json.dumps({"error": message}).encode()


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
    name = model_name(path, name)
    service = _core.Service(model, name, **options)
    if warmup:
        service.warmup()
    service.set_ready(True)
    return service


def model_name(path, name=None):
    """The URL name: the one given, else the file name without its extension."""
    return name or os.path.splitext(os.path.basename(path))[0] or "model"


def _handle(service, method, path, body, headers, compress=True):
    return service.handle(method, path, body, headers.get("content-type"),
                          headers.get("authorization"),
                          headers.get("inference-header-content-length"),
                          headers.get("content-encoding"),
                          headers.get("accept-encoding") if compress else None)


def repository_for(root, warmup=True, optimize=True, auth_token=None, **options):
    """(registry, controller) serving every model of a repository directory, loaded as
    ``python -m berth serve REPO/`` loads them (control mode none); RepositoryError for a
    repository with no models or a model that cannot load. options: max_batch_size,
    max_delay_ms, max_queue, batching, timeout_ms (a model's config.toml wins)."""
    from ..repository import RepositoryError
    from .control import Controller, Settings
    fields = {"max_batch_size", "max_delay_ms", "max_queue", "timeout_ms"}
    unknown = set(options) - fields - {"batching"}
    if unknown:
        raise TypeError(f"unexpected option(s) for a repository: {', '.join(sorted(unknown))}")
    settings = Settings(optimize=optimize, warmup=warmup,
                        batching=options.get("batching") is not False,
                        **{k: v for k, v in options.items() if k in fields})
    registry = _core.Registry(auth_token=auth_token)
    controller = Controller(registry, settings, "none", root=os.fsdecode(root))
    controller.start()
    failed = [n for n in sorted(controller.expected) if not controller.served.get(n)]
    if failed or not controller.expected:
        controller.close()
        registry.close()
        raise RepositoryError(f"repository {os.fsdecode(root)!r}: "
                              + ("; ".join(f"{n}: {controller.reason(n)}" for n in failed) if failed
                                 else "expected model directories, got none"))
    return registry, controller


def _served(model, name, options):
    import berth
    if isinstance(model, (str, bytes, os.PathLike)) and os.path.isdir(os.fsdecode(model)):
        if name is not None:
            raise TypeError("name: a repository's models are named by their directories, got "
                            f"name={name!r}")
        registry, controller = repository_for(model, **options)
        return Served(sorted(controller.served), registry, controller)
    service = service_for(model, name, **options)  # refuses anything but a path or a Model
    path = model.path if isinstance(model, berth.Model) else os.fsdecode(model)
    return Served([model_name(path, name)], service)


def fastapi_served(app, own):
    """The berth models of a FastAPI/Starlette app, in the order their routers were
    included (own alone when none is found): each berth route's endpoint carries its
    model. Walks included routers and mounts, as FastAPI keeps them (flattened copies in
    older releases, the included router itself in newer ones)."""
    found, seen = [], set()

    def walk(routes):
        for route in routes:
            if id(route) in seen:
                continue
            seen.add(id(route))
            served = getattr(getattr(route, "endpoint", None), "berth_served", None)
            if served is not None and served not in found:
                found.append(served)
            for attr in ("original_router", "app"):
                inner = getattr(route, attr, None)
                if inner is not None and isinstance(getattr(inner, "routes", None), list):
                    walk(inner.routes)

    walk(getattr(app, "routes", []))
    return found or [own]


def fastapi_router(model, name=None, **options):
    """An ``APIRouter`` serving ``model`` (path or berth.Model); see the module docstring.

    The router answers its own model's paths (``/v2/models/{name}...``,
    ``/v1/models/{name}...``) and, for every berth router of the app, the shared ones
    (``/v2``, ``/v2/health/*``, ``/v2/models/stats``, ``/metrics``): include several to
    serve several models. The C codec runs in Starlette's thread pool, so the event loop
    never blocks. ``router.berth_service`` is the underlying service (``metrics()``,
    ``stats()``).
    """
    from fastapi import APIRouter
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    own = _served(model, name, options)
    router = APIRouter()

    def respond(answer):
        status, headers, out = answer
        return Response(content=out, status_code=status, headers=dict(headers))

    # Each endpoint rebuilds the protocol path from its own template and the matched
    # rest, so a router included under a prefix still hands the codec /v2/... paths.
    def endpoint(base, answer):
        async def handle(request):
            rest = request.path_params.get("rest")
            path = base if rest is None else f"{base}/{rest}"
            body = await request.body()
            return respond(await run_in_threadpool(answer, request, path, body))
        handle.berth_served = own
        return handle

    def model_answer(request, path, body):
        return _handle(own.service, request.method, path, body, request.headers)

    def shared(request, path, body):
        return shared_answer(fastapi_served(request.app, own), request.method, path, body,
                             request.headers)

    def by_name(request, path, body):
        # Starlette tries routes in order: the first router's catch-all sees the paths of
        # models whose routers were included after it, and hands them to their service.
        served = fastapi_served(request.app, own)
        target = next((s for s in served if name_in_path(path) in s.names), None)
        if target is None:
            return not_found(served, path)
        return _handle(target.service, request.method, path, body, request.headers)

    for model in own.names:
        for path in model_paths(model):
            router.add_route(path, endpoint(path, model_answer), methods=METHODS,
                             include_in_schema=False)
        base = f"/v2/models/{model}"
        router.add_route(base + "/{rest:path}", endpoint(base, model_answer), methods=METHODS,
                         include_in_schema=False)
    for path in SHARED_PATHS:
        router.add_route(path, endpoint(path, shared), methods=METHODS, include_in_schema=False)
    for root in ("/v2/models", "/v1/models"):
        router.add_route(root + "/{rest:path}", endpoint(root, by_name), methods=METHODS,
                         include_in_schema=False)
    router.berth_service = own.service
    return router


def flask_blueprint(model, name=None, blueprint_name=None, **options):
    """A Flask ``Blueprint`` serving ``model`` (path or berth.Model); see the module docstring.

    Like :func:`fastapi_router`, it answers its own model's paths and, for every berth
    blueprint of the app, the shared ones. ``blueprint_name`` defaults to
    ``berth_<model name>``. ``blueprint.berth_service`` is the underlying service.
    """
    from flask import Blueprint, Response, current_app, request

    own = _served(model, name, options)
    blueprint = Blueprint(blueprint_name or f"berth_{'_'.join(own.names)}"[:100].replace(".", "_"), __name__)

    @blueprint.record_once
    def remember(state):
        state.app.extensions.setdefault("berth_served", []).append(own)

    def app_served():
        return current_app.extensions.get("berth_served") or [own]

    def respond(answer):
        status, headers, out = answer
        return Response(out, status=status, headers=headers)

    # Each view rebuilds the protocol path from its own rule and the matched rest, so a
    # blueprint registered under a url_prefix still hands the codec /v2/... paths.
    def view(base, answer):
        def handle(rest=None):
            path = base if rest is None else f"{base}/{rest}"
            return respond(answer(path))
        return handle

    def model_answer(path):
        return _handle(own.service, request.method, path, request.get_data(), request.headers)

    def shared(path):
        return shared_answer(app_served(), request.method, path, request.get_data(),
                             request.headers)

    def unknown(path):
        return not_found(app_served(), path)

    # Werkzeug tries rules with more literal text first, so a model's own paths win over
    # the unknown-model rules whatever order the blueprints were registered in.
    for k, model in enumerate(own.names):
        for i, path in enumerate(model_paths(model)):
            blueprint.add_url_rule(path, f"model_{k}_{i}", view(path, model_answer), methods=METHODS)
        base = f"/v2/models/{model}"
        blueprint.add_url_rule(base + "/<path:rest>", f"model_rest_{k}", view(base, model_answer),
                               methods=METHODS)
    for i, path in enumerate(SHARED_PATHS):
        blueprint.add_url_rule(path, f"shared_{i}", view(path, shared), methods=METHODS)
    for i, root in enumerate(("/v2/models", "/v1/models")):
        blueprint.add_url_rule(root + "/<path:rest>", f"unknown_{i}", view(root, unknown),
                               methods=METHODS)
    blueprint.berth_service = own.service
    return blueprint
