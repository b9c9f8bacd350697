"""``python -m berth serve MODEL... | REPO/``: the C server, started and stopped from Python.

Python parses the arguments, starts the C server, loads and warms up the models (see
``control``: one file, several, or a repository of models and versions), turns readiness
on and waits for SIGTERM/SIGINT, while the controller's thread answers the repository
extension and polls. No Python runs on the request path.

>>> args = build_parser().parse_args(["model.pt", "--port", "9000"])
>>> (args.host, args.port, args.max_batch_size, args.max_delay_ms, args.grace_period)
('0.0.0.0', 9000, 64, 2.0, 20.0)
>>> model_name_from_path("/models/seed-v2.pt")
'seed-v2'
"""
import argparse
import dataclasses
import math
import os
import signal
import sys
import threading
import time

from .. import _core
from ..repository import RepositoryError, is_repository, scan_repository, single_files
from .control import MODES, Controller, Settings, log

# Defaults of the serving limits, defined once in the C core (server.h).
LIMITS = _core.SERVING_DEFAULTS
MIB = 1 << 20

EXIT_USAGE = 2  # bad arguments, checksum mismatch, unreadable files
EXIT_LOAD = 1   # the model or the server could not start


def build_parser():
    """The argument parser of ``python -m berth serve``."""
    p = argparse.ArgumentParser(
        prog="python -m berth serve",
        description="Serve TorchScript and .pt2 models over the Open Inference Protocol v2 "
                    "and KServe v1 from berth's C HTTP server, with dynamic batching: one file, "
                    "several (each a model named after its file), or a model repository "
                    "(REPO/<model>/<version>/model.pt or model.pt2, with an optional "
                    "REPO/<model>/config.toml; see berth.repository).")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="model files (.pt, .pt2), or one repository directory")
    p.add_argument("--model-control-mode", choices=MODES, default="none",
                   help="none: load every model at start; poll: also rescan the repository "
                        "every --repository-poll-secs and load, replace or unload what "
                        "changed; explicit: load only --load-model at start, then what "
                        "POST /v2/repository/models/{m}/load and /unload ask for "
                        "(default none)")
    p.add_argument("--repository-poll-secs", type=float, default=15.0,
                   help="seconds between rescans in poll mode (default 15)")
    p.add_argument("--load-model", action="append", default=[], metavar="NAME",
                   help="in explicit mode, a model to load at start (repeatable; '*': all)")
    p.add_argument("--no-strict-readiness", action="store_true",
                   help="ready as soon as the server runs; by default /v2/health/ready waits "
                        "until every model that should be loaded is ready")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free)")
    p.add_argument("--name", help="model name in URLs, for one model file (default: the file name "
                                  "without its extension)")
    p.add_argument("--max-batch-size", type=int, default=LIMITS["max_batch_size"],
                   help="rows per forward (default %(default)d)")
    p.add_argument("--max-delay-ms", type=float, default=LIMITS["max_delay_ms"],
                   help="longest wait for more rows after the first (default %(default)g)")
    p.add_argument("--max-queue", type=int, default=LIMITS["max_queue"],
                   help="queued requests before 503 Overloaded (default %(default)d)")
    p.add_argument("--no-batching", action="store_true", help="run one request per forward")
    p.add_argument("--input", action="append", metavar="NAME:DATATYPE:SHAPE", dest="inputs",
                   help="a plain file's input, e.g. image:FP32:-1,3,224,224 (-1: any extent; "
                        "repeat in forward's order): with it the model batches, warms up and "
                        "publishes datatype and shape (python -m berth sign embeds it)")
    p.add_argument("--output", action="append", metavar="NAME:DATATYPE:SHAPE", dest="outputs",
                   help="a plain file's output, likewise (needed to batch)")
    p.add_argument("--library", action="append", default=[], metavar="PATH",
                   help="a library of custom operators the model needs, loaded before it "
                        "(repeatable; e.g. torchvision's _C.so for torchvision::nms)")
    p.add_argument("--no-optimize", action="store_true",
                   help="serve the model as saved; by default it is frozen and optimized for "
                        "inference (berth.load(path, optimize=True)) when libtorch can")
    p.add_argument("--no-batch-tuning", action="store_true",
                   help="fill batches up to --max-batch-size; by default batches of 1, 2, "
                        "4, ... rows are timed (in warm-up for up to 50 ms when the "
                        "climb can fit, then on served batches) and the smallest size "
                        "with about the cheapest rows is kept")
    p.add_argument("--workers", type=int, default=LIMITS["workers"],
                   help="forwards run concurrently (default %(default)d; try 2 with --threads 1 for "
                        "models that batching does not speed up)")
    p.add_argument("--threads", type=int,
                   help="libtorch intra-op threads (default: BERTH_NUM_THREADS, else the "
                        "cgroup CPU quota, else the CPU count)")
    p.add_argument("--http-threads", type=int,
                   help="HTTP threads (default: as many as intra-op threads, at least 2)")
    p.add_argument("--max-body-mb", type=float, default=LIMITS["max_body_bytes"] / MIB,
                   help="largest request body in MiB; larger get 413 (default %(default)g)")
    p.add_argument("--max-pending-body-mb", type=float,
                   help="memory all unfinished request bodies may hold together, in MiB; "
                        "past it new bodies get 503 (default: "
                        f"{LIMITS['body_budget_factor']} x --max-body-mb)")
    p.add_argument("--max-rows-per-request", type=int, default=LIMITS["max_rows"],
                   help="rows (leading extent) one request may ask for; more get 413 before "
                        "any forward (default %(default)d)")
    p.add_argument("--max-response-mb", type=float,
                   default=LIMITS["max_response_bytes"] / MIB,
                   help="largest response in MiB, estimated before encoding; larger get 413 "
                        "(default %(default)g)")
    p.add_argument("--max-connections", type=int, default=LIMITS["connection_limit"],
                   help="open connections at most (default %(default)d)")
    p.add_argument("--per-ip-connections", type=int, default=LIMITS["per_ip_connections"],
                   help="open connections one client address may hold (default %(default)d; "
                        "raise it behind a proxy that opens more)")
    p.add_argument("--header-timeout", type=int, default=LIMITS["header_timeout_s"],
                   help="seconds a new connection may stay silent before sending its "
                        "request headers (default %(default)d)")
    p.add_argument("--timeout-ms", type=float, default=0.0,
                   help="answer 503 to requests not answered within this many ms of being read, "
                        "whatever the forward is doing (default: no limit)")
    p.add_argument("--grace-period", type=float, default=20.0,
                   help="seconds to finish in-flight requests after SIGTERM (default 20)")
    p.add_argument("--sha256", help="refuse to start unless the model file has this sha256 "
                                    "(or set BERTH_MODEL_SHA256)")
    p.add_argument("--log-level", choices=("info", "debug"), default="info",
                   help="debug logs one line per request")
    p.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", help="PEM private key for --tls-cert")
    p.add_argument("--auth-token-file",
                   help="file holding a bearer token required on every endpoint but health")
    return p


def model_name_from_path(path):
    """The default model name: the file's base name without its extension."""
    return os.path.splitext(os.path.basename(path))[0] or "model"


class StartupError(Exception):
    """A reason not to start, with the exit status to use."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


# Every numeric flag: (attribute, lowest, highest, lowest excluded). Values outside are
# refused with the flag's name, before anything is sized from them.
NUMERIC_FLAGS = (
    ("port", 0, 65535, False),
    ("max_batch_size", 1, LIMITS["max_batch_size_limit"], False),
    ("max_delay_ms", 0, LIMITS["max_delay_ms_limit"], False),
    ("max_queue", 1, LIMITS["max_queue_limit"], False),
    ("workers", 1, LIMITS["workers_limit"], False),
    ("threads", 1, LIMITS["threads_limit"], False),
    ("http_threads", 1, LIMITS["http_threads_limit"], False),
    ("max_body_mb", 0, LIMITS["max_body_bytes_limit"] / MIB, True),
    ("max_pending_body_mb", 0, float(1 << 30), True),
    ("max_rows_per_request", 1, (1 << 63) - 1, False),
    ("max_response_mb", 0, float(1 << 30), True),
    ("max_connections", 1, 1 << 20, False),
    ("per_ip_connections", 1, 1 << 20, False),
    ("header_timeout", 1, 86400, False),
    ("timeout_ms", 0, 86400e3, False),
    ("grace_period", 0, 86400, False),
    ("repository_poll_secs", 0, 86400, True),
)


def check_numbers(args):
    """Refuses a numeric flag out of its range (naming the flag), NaN or infinity.

    >>> check_numbers(build_parser().parse_args(["m.pt", "--max-body-mb", "17592186044417"]))
    Traceback (most recent call last):
    ...
    berth.serving.cli.StartupError: --max-body-mb must be > 0 and <= 4096, got 17592186044417
    """
    for attr, lo, hi, lo_excluded in NUMERIC_FLAGS:
        value = getattr(args, attr)
        if value is None:
            continue
        ok = math.isfinite(value) and (value > lo if lo_excluded else value >= lo) and value <= hi
        if not ok:
            flag = "--" + attr.replace("_", "-")
            low = f"> {lo:g}" if lo_excluded else f">= {lo:g}"
            raise StartupError(f"{flag} must be {low} and <= {hi:g}, got {value:.15g}", EXIT_USAGE)


def check_model_file(path):
    """Refuses a model path that is missing, a directory or unreadable, naming it."""
    if os.path.isdir(path):
        raise StartupError(f"model file {path!r} is a directory, expected a TorchScript or .pt2 file "
                           "(serve a repository directory alone: python -m berth serve REPO/)",
                           EXIT_USAGE)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise StartupError(f"model file {path!r} does not exist", EXIT_USAGE) from None
    except OSError as e:
        raise StartupError(f"cannot read model file {path!r}: {e.strerror}", EXIT_USAGE) from None


def check_arguments(args):
    """Validates args beyond argparse; raises StartupError."""
    check_numbers(args)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise StartupError("HTTPS needs both --tls-cert and --tls-key", EXIT_USAGE)
    repository = is_repository(args.models)
    for flag, given in (("--name", args.name), ("--input", args.inputs), ("--output", args.outputs),
                        ("--sha256", args.sha256)):
        if given and (repository or len(args.models) > 1):
            raise StartupError(f"{flag} is for one model file, got "
                               + ("a repository (put it in REPO/<model>/config.toml)" if repository
                                  else f"{len(args.models)} files"), EXIT_USAGE)
    if args.load_model and args.model_control_mode != "explicit":
        raise StartupError("--load-model is for --model-control-mode explicit, got "
                           f"--model-control-mode {args.model_control_mode}", EXIT_USAGE)
    if not repository:
        for path in args.models:
            check_model_file(path)
    if args.outputs and not args.inputs:
        raise StartupError("--output: expected --input options too (a signature lists the inputs), got none",
                           EXIT_USAGE)
    if args.inputs:
        from ..signature import signature_from_options
        try:
            signature_from_options(args.inputs, args.outputs or ())
        except ValueError as e:
            raise StartupError(str(e), EXIT_USAGE) from None


def read_text(path, what):
    """Contents of a small text file, or StartupError naming the flag."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise StartupError(f"cannot read {what} {path!r}: {e.strerror}", EXIT_USAGE) from None


def model_sources(args):
    """The shorthand's {name: ModelSource} (one file's flags in its config), or None for a
    repository."""
    if is_repository(args.models):
        return None
    try:
        sources = single_files(args.models)
    except RepositoryError as e:
        raise StartupError(str(e), EXIT_USAGE) from None
    if len(sources) == 1:
        (name, source), = sources.items()
        expected = args.sha256 or os.environ.get("BERTH_MODEL_SHA256")
        config = dataclasses.replace(
            source.config, inputs=tuple(args.inputs or ()), outputs=tuple(args.outputs or ()),
            sha256={1: expected.strip().lower()} if expected else {})
        name = args.name or name
        sources = {name: dataclasses.replace(source, name=name, config=config)}
    return sources


def start(args):
    """Starts listening with nothing loaded yet; returns (controller, server, http_threads)."""
    if args.threads:
        os.environ["BERTH_NUM_THREADS"] = str(args.threads)
    # libtorch's OpenMP workers spin for a while after each forward by default, taking the
    # cores the HTTP threads need to parse the next requests (measured: benchmarks/README.md,
    # Serving). Set before libtorch is loaded.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if keeps_freed_memory(os.environ):
        _core.keep_freed_memory()
    token = None
    if args.auth_token_file:
        token = read_text(args.auth_token_file, "--auth-token-file").strip()
        if not token:
            raise StartupError(f"--auth-token-file {args.auth_token_file!r} is empty", EXIT_USAGE)
    cert = read_text(args.tls_cert, "--tls-cert") if args.tls_cert else None
    key = read_text(args.tls_key, "--tls-key") if args.tls_key else None
    sources = model_sources(args)
    root = None if sources is not None else args.models[0]
    if root is not None:
        try:
            found = scan_repository(root)
        except RepositoryError as e:
            raise StartupError(str(e), EXIT_USAGE) from None
        if not found and args.model_control_mode == "none":
            raise StartupError(f"repository {root!r} holds no model directories (expected "
                               f"{os.path.join(root, '<model>', '<version>', 'model.pt')})", EXIT_USAGE)
    try:
        from .._model import load_libraries
        load_libraries(args.library, "--library")
    except ValueError as e:
        raise StartupError(str(e), EXIT_LOAD) from None
    settings = Settings(
        max_batch_size=args.max_batch_size, max_delay_ms=args.max_delay_ms, max_queue=args.max_queue,
        batching=not args.no_batching, workers=args.workers, optimize=not args.no_optimize,
        batch_tuning=not args.no_batch_tuning, timeout_ms=args.timeout_ms,
        max_rows=args.max_rows_per_request, max_response_bytes=int(args.max_response_mb * MIB),
        log_requests=args.log_level == "debug", grace_s=args.grace_period)
    registry = _core.Registry(auth_token=token, log_requests=settings.log_requests,
                              strict_readiness=not args.no_strict_readiness, control=True)
    registry.set_loaded(False, "not ready: loading models")
    controller = Controller(registry, settings, args.model_control_mode, root=root, sources=sources,
                            describe=describe)
    try:  # the intra-op threads the first load will set (BERTH_NUM_THREADS, quota, CPUs)
        threads = _core.num_threads() or _core.default_num_threads()
    except ValueError as e:
        raise StartupError(str(e), EXIT_USAGE) from None
    http_threads = args.http_threads or max(2, threads)
    try:
        max_body = max(1, int(args.max_body_mb * MIB))
        budget = (int(args.max_pending_body_mb * MIB) if args.max_pending_body_mb
                  else max_body * LIMITS["body_budget_factor"])
        server = _core.Server(registry, host=args.host, port=args.port, threads=http_threads,
                              max_body_bytes=max_body, tls_cert=cert, tls_key=key,
                              connection_limit=args.max_connections,
                              per_ip_connections=args.per_ip_connections,
                              header_timeout_s=args.header_timeout, body_budget=budget)
    except ValueError as e:
        registry.close()
        raise StartupError(str(e), EXIT_LOAD) from None
    return controller, server, http_threads


def describe(name, version, served):
    """Logs what a loaded version is, how it is served and how its warm-up went."""
    service, model = served.service, served.model
    path = name if model.path.startswith("/proc/self/fd/") else model.path
    log(f"serving {path} as '{name}' version {version}: {signature_text(model)}; batching "
        + (f"on (at most {service.batch_limit} rows)" if service.batching else "off")
        + ("; AOTInductor package" if model.format == "pt2"
           else "; optimized for inference" if model.optimized else ""))
    if served.warm_failure is None:
        log(f"warm-up skipped: {missing_signature_text(model)}" if served.warm_seconds is None
            else f"warmed up in {served.warm_seconds * 1000:.0f} ms")
    if service.batch_tuning is not None and not service.batch_tuned:
        log(service.batch_tuning)  # the batcher logs the limit when the climb ends


def keeps_freed_memory(environ):
    """Whether serve keeps freed memory for reuse (see ``_core.keep_freed_memory``).

    Every forward allocates the same large activations; returning them to the kernel and
    faulting them back in costs big batches dearly (measured: benchmarks/README.md,
    Serving). The user's own glibc malloc settings, or ``BERTH_KEEP_FREED_MEMORY=0``, win.

    >>> keeps_freed_memory({})
    True
    >>> keeps_freed_memory({"BERTH_KEEP_FREED_MEMORY": "0"})
    False
    >>> keeps_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
    False
    """
    if environ.get("BERTH_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in environ):
        return False
    return "glibc.malloc." not in environ.get("GLIBC_TUNABLES", "")


def signature_text(model):
    """"dense_input: float32 (-1, 10) -> dense_2: float32 (-1, 1)" style summary."""
    def one(spec):
        shape = "?" if spec.shape is None else "(" + ", ".join(map(str, spec.shape)) + ")"
        return f"{spec.name}: {spec.dtype or '?'} {shape}"
    ins = ", ".join(one(s) for s in model.inputs) or "?"
    outs = ", ".join(one(s) for s in model.outputs) or "?"
    return f"{ins} -> {outs}"


def missing_signature_text(model):
    """What serve could not learn of a model without a complete signature, and the flags
    that give it (what ``python -m berth inspect`` says too).

    >>> from berth import TensorSpec
    >>> class M: inputs = (TensorSpec("x", None, None),); outputs = ()
    >>> missing_signature_text(M())
    "no dtype/shape for input 'x'; no outputs known; pass --input NAME:DATATYPE:SHAPE for each input and --output likewise for each output (or embed them with python -m berth sign) to batch, warm up and publish them"
    """
    missing = [f"input {s.name!r}" for s in model.inputs if s.dtype is None or s.shape is None]
    what = (["no dtype/shape for " + ", ".join(missing)] if missing else []) + \
        (["no outputs known"] if not model.outputs else [])
    return ("; ".join(what) or "the signature has no free leading (batch) dimension") + \
        ("; pass --input NAME:DATATYPE:SHAPE for each input and --output likewise for each output (or embed "
         "them with python -m berth sign) to batch, warm up and publish them" if what else "")


def main(argv):
    """Runs ``python -m berth serve``; returns the exit status (0 after a clean SIGTERM)."""
    args = build_parser().parse_intermixed_args(argv)
    stop = threading.Event()
    received = []

    def on_signal(signum, frame):
        # Only a flag: the handler runs on the main thread, possibly inside a lock it
        # would need (Event.set from within Event.wait deadlocks).
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            check_arguments(args)
            controller, server, http_threads = start(args)
        except StartupError as e:
            log(f"error: {e}")
            return e.status
        scheme = "https" if args.tls_cert else "http"
        log(f"http threads {http_threads}; model control mode {args.model_control_mode}; "
            f"listening on {scheme}://{args.host}:{server.port}"
            + ("; bearer token required" if args.auth_token_file else ""))
        try:
            controller.start(args.load_model)
        except RepositoryError as e:
            log(f"error: {e}")
            server.close()
            controller.close()
            return EXIT_USAGE
        failed = [n for n in sorted(controller.expected) if not controller.served.get(n)]
        if failed and args.model_control_mode == "none":
            for name in failed:
                log(f"error: refusing to start: {name}: {controller.reason(name)}")
            server.close()
            controller.close()
            return EXIT_USAGE if set(failed) <= controller.usage_faults else EXIT_LOAD
        control = threading.Thread(target=controller.run, name="berth-control", daemon=True,
                                   args=(stop, args.repository_poll_secs
                                         if args.model_control_mode == "poll" else None))
        control.start()
        versions = sum(len(v) for v in controller.served.values())
        log(f"{versions} model version(s) loaded; libtorch threads {_core.num_threads()} (shared by "
            f"every model), {args.workers} worker(s) per model unless its config.toml says otherwise")
        controller.update_readiness()  # logs "ready" once it is
        while not received:
            time.sleep(0.2)
        stop.set()
        log(f"received {signal.Signals(received[0]).name}: not ready; finishing in-flight "
            f"requests (grace period {args.grace_period:g} s)")
        started = time.monotonic()
        server.drain(max(0.0, args.grace_period - 1.0))
        server.close()
        control.join(max(0.1, args.grace_period - (time.monotonic() - started)))
        # Every request has its answer now; a forward may still be running (its answer was a
        # 503). Wait for it only as long as the grace period allows.
        closer = threading.Thread(target=controller.close, daemon=True)
        closer.start()
        closer.join(max(0.1, args.grace_period - (time.monotonic() - started)))
        if closer.is_alive() or control.is_alive():
            log("stopped (a forward or a model load was still running at the end of the grace period)")
            sys.stderr.flush()
            os._exit(0)  # no interpreter teardown under a running forward
        log("stopped")
        return 0
    finally:
        if not received:  # after a signal, later ones must not kill the exiting process
            for s, handler in previous.items():
                signal.signal(s, handler)
