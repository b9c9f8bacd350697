"""What ``python -m berth serve`` serves, and the changes to it while it runs.

The C server answers every request from a ``_core.Registry`` of model versions; this
module decides what is in it. A version is loaded (its sha256 checked first when the
config gives one), warmed up and only then put on the routes; a replaced version is
swapped in place (``Registry.replace``) and one no longer wanted is taken off
(``Registry.remove``), each drained: requests in flight finish on the version they
started on. A model that fails to load leaves what was serving in place, and says why
in the repository index and the log.

Model control modes, Triton's names: ``none`` loads every model at start; ``poll`` also
rescans the repository every ``--repository-poll-secs`` and loads, replaces or unloads
what changed; ``explicit`` loads only ``--load-model`` names at start, then what
``POST /v2/repository/models/{m}/load`` and ``/unload`` ask for. ``POST
/v2/repository/index`` answers in every mode. The repository extension's requests come
from the C server through ``Registry.next_control`` and are handled one at a time on
the controller's thread (a load takes as long as loading and warming the model up).

>>> from berth.repository import VersionPolicy
>>> policy_json(VersionPolicy("latest", count=2)), policy_json(VersionPolicy("all"))
('{"latest":{"num_versions":2}}', '{"all":{}}')
"""
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time

from .. import _core
from ..repository import RepositoryError, scan_repository

MODES = ("none", "poll", "explicit")
READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


class LoadFailure(Exception):
    """A version that could not be loaded, checked or warmed up, and why. ``usage``: the
    operator's files or flags are at fault (a checksum, an unreadable file), not the model."""

    def __init__(self, message, usage=False):
        super().__init__(message)
        self.usage = usage


DEFAULTS = _core.SERVING_DEFAULTS  # the C core's: one home for each default


@dataclasses.dataclass(frozen=True)
class Settings:
    """What serve's flags give every model; a model's config.toml overrides the first
    eight."""
    max_batch_size: int = DEFAULTS["max_batch_size"]
    max_delay_ms: float = DEFAULTS["max_delay_ms"]
    max_queue: int = DEFAULTS["max_queue"]
    batching: bool = True
    workers: int = DEFAULTS["workers"]
    optimize: bool = True
    batch_tuning: bool = True
    warmup: bool = True
    timeout_ms: float = 0.0
    max_rows: int = DEFAULTS["max_rows"]
    max_response_bytes: int = DEFAULTS["max_response_bytes"]
    log_requests: bool = False
    grace_s: float = 20.0


@dataclasses.dataclass
class Served:
    """A version on the routes: its service and what it was loaded from."""
    service: object
    model: object
    stamp: tuple
    warm_seconds: float = None   # None: no warm-up (no complete signature, or turned off)
    warm_failure: str = None


def policy_json(policy):
    """Triton's ``version_policy`` object for a model's /config."""
    if policy.kind == "latest":
        return json.dumps({"latest": {"num_versions": policy.count}}, separators=(",", ":"))
    if policy.kind == "all":
        return '{"all":{}}'
    return json.dumps({"specific": {"versions": list(policy.versions)}}, separators=(",", ":"))


def file_stamp(path, config):
    """What tells a changed version apart: the file's identity, size and time, and the
    config it is served with."""
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns, config)


def verified_model_bytes(path, expected):
    """The model file's bytes, read once, when their sha256 is ``expected``; the version
    is loaded from these very bytes, so the file cannot change between check and load."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LoadFailure(f"cannot read model file {str(path)!r}: {e.strerror}", usage=True) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise LoadFailure(f"{path} has sha256 {actual}, expected {expected}", usage=True)
    return data


def load_verified(data, optimize, inputs=None, outputs=None, on_probe=None):
    """Loads a model from bytes in memory (a memfd), not from a path that could change."""
    from .._model import load_for_serving
    fd = os.memfd_create("berth-model", 0)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(data)
        return load_for_serving(f"/proc/self/fd/{fd}", optimize=optimize, inputs=inputs,
                                outputs=outputs, on_probe=on_probe)
    finally:
        os.close(fd)


def compiled_for_problem(model, libtorch):
    """Why a .pt2 cannot run here (it runs only on the libtorch that compiled it), or None.

    >>> class M: format = "pt2"; metadata = {"torch_version": "2.12.0"}; path = "m.pt2"
    >>> compiled_for_problem(M(), "2.13.0+cpu")
    'm.pt2 was compiled by torch 2.12.0, but this server runs libtorch 2.13.0+cpu; export it again with torch 2.13.0, or serve it where torch 2.12.0 is installed'
    """
    want = model.metadata.get("torch_version") if model.format == "pt2" else None
    if want and libtorch and want.split("+")[0] != libtorch.split("+")[0]:
        return (f"{model.path} was compiled by torch {want}, but this server runs libtorch {libtorch}; "
                f"export it again with torch {libtorch.split('+')[0]}, or serve it where torch "
                f"{want.split('+')[0]} is installed")
    return None


def log(message):
    print(f"berth: {message}", file=sys.stderr, flush=True)


class Controller:
    """The versions a Registry serves, kept as the repository and the mode say.

    ``sources`` is the file shorthand's {name: ModelSource}; with ``root`` the repository
    is scanned instead, at start and on every poll, load and index.
    """

    def __init__(self, registry, settings, mode="none", root=None, sources=None,
                 describe=None):
        if mode not in MODES:
            raise ValueError(f"model control mode: expected one of {', '.join(MODES)}, got {mode!r}")
        self.registry = registry
        self.settings = settings
        self.mode = mode
        self.root = root
        self.sources = sources or {}
        self.describe = describe or (lambda name, version, served: None)
        self.served = {}     # {name: {version: Served}}
        self.failures = {}   # {name: {version or None: reason}}
        self.usage_faults = set()  # names whose last failure was the operator's files or flags
        self.failed_stamps = {}    # {(name, version): stamp} of files that failed: not retried
                                   # by poll until they change (an explicit load retries)
        self.expected = set()  # names that should be served (strict readiness)
        self.lock = threading.Lock()
        self.said_ready = None  # the readiness last logged
        self.libtorch = _core.torch_version() if hasattr(_core, "torch_version") else None

    # ------------------------------------------------------------- the repository

    def scan(self):
        """{name: ModelSource} as the repository (or the shorthand) has them now."""
        return scan_repository(self.root) if self.root is not None else dict(self.sources)

    # ------------------------------------------------------------- versions

    def load_version(self, name, version, path, config, replacing):
        """A warmed-up Served for one version file; LoadFailure says why not."""
        s = self.settings
        inputs, outputs = list(config.inputs) or None, list(config.outputs) or None
        expected = config.sha256.get(version)
        optimize = s.optimize and config.optimize
        try:
            if expected:
                data = verified_model_bytes(path, expected)
                model, unoptimized = load_verified(data, optimize, inputs, outputs, on_probe=log)
                del data
            else:
                from .._model import load_for_serving
                model, unoptimized = load_for_serving(str(path), optimize=optimize, inputs=inputs,
                                                      outputs=outputs, on_probe=log)
        except LoadFailure:
            raise
        except (_core.BerthError, ValueError, OSError) as e:
            raise LoadFailure(str(e)) from None
        # what loading freed (resnet18: 4x its weights) would stay resident with freed
        # memory kept; warm-up and serving then grow the heap to what forwards need
        _core.release_freed_memory()
        problem = compiled_for_problem(model, self.libtorch)
        if problem:
            raise LoadFailure(problem)
        if unoptimized:
            log(f"warning: serving {name} version {version} unoptimized: {unoptimized} (--no-optimize, "
                "or optimize = false in its config.toml, serves it as saved without trying)")

        def pick(key):  # the config's value, else the flag's
            return getattr(config, key) if getattr(config, key) is not None else getattr(s, key)
        try:
            service = _core.Service(
                model, name, version=version, version_policy=policy_json(config.version_policy),
                max_batch_size=pick("max_batch_size"), max_delay_ms=pick("max_delay_ms"),
                max_queue=pick("max_queue"),
                batching=False if not (s.batching and config.batching) else None,
                log_requests=s.log_requests, timeout_ms=s.timeout_ms, workers=pick("workers"),
                max_rows=s.max_rows, max_response_bytes=s.max_response_bytes)
        except ValueError as e:
            raise LoadFailure(str(e)) from None
        served = Served(service, model, file_stamp(path, config))
        if s.warmup and config.warmup:
            try:
                seconds = service.warmup(tune_batch=s.batch_tuning and config.batch_tuning)
            except Exception as e:  # forward failed on zeros of the signature's shape
                served.warm_failure = f"warm-up failed: {e}"
                if replacing:
                    service.close()
                    raise LoadFailure(served.warm_failure) from None
                log(f"error: {name} version {version}: warm-up failed, the model stays not ready "
                    f"(the ready endpoints answer 503): {e}")
            else:
                served.warm_seconds = seconds
        service.set_ready(True)
        self.describe(name, version, served)
        return served

    def sync(self, name, source, retry=False):
        """Makes name's versions on the routes those its source selects; True when every
        one of them is served. A version that fails keeps the old ones serving; a file that
        failed is tried again once it changes, or with ``retry`` (an explicit load)."""
        served = self.served.setdefault(name, {})
        failures = self.failures.setdefault(name, {})
        if source is None:
            self.unload(name, "removed from the repository")
            return True
        if source.error:
            if failures.get(None) != source.error:  # said once, not on every poll
                log(f"error: model {name}: {source.error}"
                    + ("; the versions loaded keep serving" if served else ""))
            failures[None] = source.error
            if not source.versions:
                return False
        else:
            failures.pop(None, None)
        want = source.selected()
        ok = not source.error
        for version in want:
            path, config = source.versions[version], source.config
            try:
                stamp = file_stamp(path, config)
            except OSError as e:
                failures[version] = f"cannot read {path}: {e.strerror}"
                ok = False
                continue
            current = served.get(version)
            if current is not None and current.stamp == stamp:
                continue
            if not retry and self.failed_stamps.get((name, version)) == stamp:
                ok = False  # failed as it is now: see failures
                continue
            try:
                fresh = self.load_version(name, version, path, config, replacing=current is not None)
            except LoadFailure as e:
                self.failed_stamps[(name, version)] = stamp
                failures[version] = str(e)
                (self.usage_faults.add if e.usage else self.usage_faults.discard)(name)
                ok = False
                log(f"error: cannot load {name} version {version}: {e}"
                    + ("; the version loaded before keeps serving" if current is not None else ""))
                continue
            failures.pop(version, None)
            self.failed_stamps.pop((name, version), None)
            if current is None:
                self.registry.add(fresh.service)
            else:
                old = self.registry.replace(fresh.service, grace_s=self.settings.grace_s)
                old.close()
                log(f"{name} version {version}: replaced")
            served[version] = fresh
        if ok:
            for version in [v for v in served if v not in want]:
                self.unload_version(name, version)
        return ok and all(v in served for v in want)

    def unload_version(self, name, version, why="unloaded"):
        served = self.served[name].pop(version)
        self.registry.remove(name, version, grace_s=self.settings.grace_s)
        served.service.close()
        self.failures.setdefault(name, {})[version] = why
        log(f"{name} version {version}: {why}")

    def unload(self, name, why="unloaded"):
        for version in sorted(self.served.get(name, {})):
            self.unload_version(name, version, why)

    # ------------------------------------------------------------- whole passes

    def start(self, names=None):
        """Loads every model (or ``names``, in explicit mode) and sets readiness."""
        with self.lock:
            sources = self.scan()
            if self.mode == "explicit":
                names = sorted(sources) if names and "*" in names else list(names or ())
            else:
                names = sorted(sources)
            missing = [n for n in names if n not in sources]
            if missing:
                raise RepositoryError(f"--load-model: expected models of the repository "
                                      f"({', '.join(sorted(sources)) or 'none'}), got "
                                      f"{', '.join(map(repr, missing))}")
            self.registry.set_loaded(False, "not ready: loading models")
            for name in names:
                self.expected.add(name)
                self.sync(name, sources[name])
            self.update_readiness()

    def poll(self):
        """Loads, replaces and unloads what changed in the repository since the last pass."""
        with self.lock:
            try:
                sources = self.scan()
            except RepositoryError as e:
                log(f"error: poll: {e}; serving what is loaded")
                return
            for name in sorted(set(sources) | set(self.served)):
                source = sources.get(name)
                if source is None:
                    self.expected.discard(name)
                    if self.served.get(name):
                        self.unload(name, "removed from the repository")
                    self.failures.pop(name, None)
                    continue
                self.expected.add(name)
                self.sync(name, source)
            self.update_readiness()

    def update_readiness(self):
        """Strict readiness: every expected model has a version on the routes (and, in the
        C registry, every version served is ready). Logs each change."""
        missing = [n for n in sorted(self.expected) if not self.served.get(n)]
        if missing:
            reasons = "; ".join(f"{n}: {self.reason(n)}" for n in missing)
            self.registry.set_loaded(False, f"not ready: model(s) not loaded: {reasons}")
        else:
            self.registry.set_loaded(True, "")
        ready = self.registry.ready
        if ready != self.said_ready and (ready or self.said_ready is not None):
            log("ready" if ready else "not ready: " + (", ".join(missing) + " not loaded" if missing
                                                     else "a model version is not ready"))
        self.said_ready = ready

    def reason(self, name):
        failures = self.failures.get(name, {})
        return failures.get(None) or next(iter(failures.values()), "not loaded")

    # ------------------------------------------------------------- the extension

    def index(self, ready_only=False):
        """Triton's repository index: [{name, version, state, reason}], by name and version."""
        try:
            sources = self.scan()
        except RepositoryError:
            sources = {}
        rows = []
        for name in sorted(set(sources) | set(self.served)):
            source = sources.get(name)
            served = self.served.get(name, {})
            failures = self.failures.get(name, {})
            versions = sorted(set(source.versions if source else ()) | set(served))
            if not versions:
                rows.append({"name": name, "state": UNAVAILABLE,
                             "reason": failures.get(None) or (source.error if source else "") or "not loaded"})
            for v in versions:
                s = served.get(v)
                if s is not None and s.service.ready:
                    rows.append({"name": name, "version": str(v), "state": READY, "reason": ""})
                else:
                    why = (s.warm_failure if s is not None and s.warm_failure
                           else failures.get(v) or failures.get(None) or "unloaded")
                    rows.append({"name": name, "version": str(v), "state": UNAVAILABLE, "reason": why})
        return [r for r in rows if r["state"] == READY] if ready_only else rows

    def handle(self, action, name, body):
        """(status, body bytes) for one repository extension request."""
        try:
            request = json.loads(body) if body.strip() else {}
        except ValueError as e:
            return error(400, f"the request body must be JSON: {e}")
        if not isinstance(request, dict):
            return error(400, f"the request body must be a JSON object, got {type(request).__name__}")
        if action == "index":
            ready = request.get("ready", False)
            if not isinstance(ready, bool):
                return error(400, f"'ready' must be true or false, got {json.dumps(ready)}")
            with self.lock:
                return 200, json.dumps(self.index(ready)).encode()
        if self.mode != "explicit":
            return error(400, f"{action} is not allowed: this server runs with --model-control-mode "
                              f"{self.mode} (explicit allows it)")
        parameters = request.get("parameters", {})
        if not isinstance(parameters, dict):
            return error(400, f"'parameters' must be a JSON object, got {json.dumps(parameters)}")
        unsupported = [k for k in parameters if k == "config" or k.startswith("file:")]
        if unsupported:
            return error(400, f"{action}: parameter(s) {', '.join(map(repr, unsupported))} are not "
                              "supported: berth loads models from the repository's files only")
        with self.lock:
            try:
                sources = self.scan()
            except RepositoryError as e:
                return error(500, str(e))
            source = sources.get(name)
            if action == "load":
                if source is None:
                    return error(400, f"failed to load '{name}': no such model in the repository "
                                      f"(its models: {', '.join(sorted(sources)) or 'none'})")
                self.expected.add(name)
                ok = self.sync(name, source, retry=True)
                self.update_readiness()
                if not ok:
                    return error(500, f"failed to load '{name}': {self.reason(name)}")
                return 200, b"{}"
            if source is None and not self.served.get(name):
                return error(400, f"failed to unload '{name}': no such model is loaded or in the repository")
            self.expected.discard(name)
            self.unload(name)
            self.update_readiness()
            return 200, b"{}"

    def run(self, stop, poll_secs=None):
        """Answers repository extension requests (and polls) until stop is set or the
        server shuts down."""
        next_poll = time.monotonic() + poll_secs if poll_secs else None
        while not stop.is_set():
            timeout = 0.5 if next_poll is None else max(0.01, min(0.5, next_poll - time.monotonic()))
            request = self.registry.next_control(timeout)
            if request is False:
                return
            if request:
                ident, action, name, body = request
                try:
                    status, answer = self.handle(action, name, body)
                except Exception as e:  # a bug here must not leave the client waiting
                    log(f"error: {action} {name}: {type(e).__name__}: {e}")
                    status, answer = error(500, f"{action} failed: {type(e).__name__}: {e}")
                self.registry.answer_control(ident, status, answer)
            if next_poll is not None and time.monotonic() >= next_poll:
                try:
                    self.poll()
                except Exception as e:  # the next pass may fare better; serving goes on
                    log(f"error: poll: {type(e).__name__}: {e}")
                next_poll = time.monotonic() + poll_secs

    def close(self, grace_s=0.0):
        """Takes every version off and closes it."""
        with self.lock:
            for name in sorted(self.served):
                for version in sorted(self.served[name]):
                    served = self.served[name].pop(version)
                    self.registry.remove(name, version, grace_s=grace_s)
                    served.service.close()


def error(status, message):
    return status, json.dumps({"error": message}).encode()
