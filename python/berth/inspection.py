"""``python -m berth inspect MODEL`` and ``python -m berth sign MODEL --input ...``:
what berth knows of a model file, and a signature embedded into a plain TorchScript file.

Neither imports torch: the zip archive is read with :mod:`zipfile` and the model is
loaded by berth's C core (:func:`berth.load`).

>>> inspect(42)
Traceback (most recent call last):
...
TypeError: berth.inspect(path): expected a file path (str or os.PathLike), got int
"""
import argparse
import json
import os
import sys
import zipfile

from .signature import (SIGNATURE_FILE, V2_DATATYPES, embed_signature, signature_from_specs,
                        torchscript_root, write_atomically)

NO_SIGNATURE_ADVICE = ("no signature: pass --input NAME:DATATYPE:SHAPE (one per input, in forward's order) and "
                       "--output NAME:DATATYPE:SHAPE (one per output; serve learns them from a probe forward when "
                       "left out) so that it batches, warms up and publishes datatype and shape; or embed them once "
                       "with python -m berth sign")


def _check_path(path, what):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{what}: expected a file path (str or os.PathLike), got {type(path).__name__}")
    path = os.fsdecode(path)
    if not os.path.isfile(path):
        there = "a directory" if os.path.isdir(path) else "nothing"
        raise FileNotFoundError(f"{what}: expected an existing model file, got {path!r} ({there} is there)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what}: expected a TorchScript file (torch.jit.save) or a .pt2 package, got {path!r}, "
                         "which is not a zip archive")
    return path


def _archive_facts(path):
    """(format, root, embedded berth.json dict or None, TorchScript archive version or None)."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = sorted({n.split("/", 1)[0] for n in names if "/" in n})
        for r in roots:
            if f"{r}/archive_format" in names and archive.read(f"{r}/archive_format").startswith(b"pt2"):
                from .pt2 import read_signature
                return "pt2", r, read_signature(path), None
        root = torchscript_root(archive)
        if root is None:
            return None, None, None, None
        version = None
        for member in (f"{root}/.data/version", f"{root}/version"):
            if member in names:
                try:
                    version = int(archive.read(member).decode().strip())
                except ValueError:
                    pass
                break
        member = f"{root}/extra/{SIGNATURE_FILE}"
        embedded = None
        if member in names:
            try:
                embedded = json.loads(archive.read(member))
            except ValueError:
                embedded = {}
        return "torchscript", root, embedded, version


def _tensor(spec):
    return {"name": spec.name, "datatype": V2_DATATYPES.get(spec.dtype) if spec.dtype else None,
            "shape": list(spec.shape) if spec.shape is not None else None}


def inspect(path, *, libraries=()):
    """What berth knows of a model file, as a dict (``python -m berth inspect`` prints it).

    Keys: ``path``, ``format`` (``"torchscript"`` or ``"pt2"``), ``size``, ``sha256``,
    ``signature`` (``{"inputs": [...], "outputs": [...]}``, each ``{"name", "datatype",
    "shape"}`` with Open Inference Protocol datatypes, ``None`` where unknown),
    ``signature_source`` (``"embedded"``: berth.json in the file; ``"package"``: a .pt2's
    own; ``"schema"``: only forward's argument names), ``required_inputs``, ``batchable``,
    ``metadata_keys`` (of berth.json), ``torch_version`` (what saved it, where recorded:
    berth.json's ``torch_version``; a plain TorchScript archive records only its format
    version, ``archive_version``), ``load_error`` (None, or why berth cannot load it) and
    ``serve_flags`` (what ``python -m berth serve`` needs, as advice lines).

    ``libraries``: custom-operator libraries the model needs, as for :func:`berth.load`.
    """
    path = _check_path(path, "berth.inspect(path)")
    from . import _core
    from ._model import load
    from .deployment.model_file import sha256_of

    fmt, root, embedded, archive_version = _archive_facts(path)
    if fmt is None:
        raise ValueError(f"berth.inspect(path): expected a TorchScript file (a zip with <archive>/data.pkl and "
                         f"<archive>/code/) or a .pt2 package, got {path!r}")
    info = {"path": path, "format": fmt, "size": os.path.getsize(path), "sha256": sha256_of(path),
            "archive_version": archive_version,
            "torch_version": (embedded or {}).get("torch_version"),
            "metadata_keys": sorted(embedded) if isinstance(embedded, dict) else [],
            "signature_source": "package" if fmt == "pt2" else ("embedded" if embedded is not None else "schema"),
            "signature": None, "required_inputs": None, "batchable": None, "load_error": None, "serve_flags": []}
    try:
        model = load(path, libraries=libraries)
    except (_core.ModelLoadError, ValueError) as e:
        info["load_error"] = str(e)
        if "Unknown builtin op" in str(e):
            info["serve_flags"].append("--library PATH: the model uses a custom operator; load the library "
                                       "that defines it")
        return info
    info["signature"] = {"inputs": [_tensor(s) for s in model.inputs],
                         "outputs": [_tensor(s) for s in model.outputs]}
    info["required_inputs"] = model.num_required_inputs
    info["batchable"] = model.batchable
    if info["torch_version"] is None and fmt == "pt2":
        info["torch_version"] = model.metadata.get("torch_version")
    if info["signature_source"] == "schema":
        info["serve_flags"].append(NO_SIGNATURE_ADVICE)
    elif not model.batchable:
        info["serve_flags"].append("the signature has no free leading (batch) dimension in every input and "
                                   "output: serve runs one request per forward")
    return info


def _shape_text(shape):
    return "?" if shape is None else "[" + ", ".join(map(str, shape)) + "]"


def inspect_text(info):
    """The human-readable form of :func:`inspect`'s dict.

    >>> print(inspect_text({"path": "m.pt", "format": "torchscript", "size": 2048, "sha256": "ab" * 32,
    ...     "archive_version": 3, "torch_version": None, "metadata_keys": [], "signature_source": "schema",
    ...     "signature": {"inputs": [{"name": "x", "datatype": None, "shape": None}], "outputs": []},
    ...     "required_inputs": 1, "batchable": False, "load_error": None, "serve_flags": ["no signature"]}))
    m.pt: TorchScript, 2048 bytes, sha256 abababababababababababababababababababababababababababababababab
      saved by: torch version not recorded (TorchScript archive format 3)
      signature: from forward's schema only (names; no datatypes or shapes)
        input  x: ? ?
        outputs: unknown
      metadata: none
      serve: no signature
    """
    kind = {"torchscript": "TorchScript", "pt2": "torch.export/AOTInductor package (.pt2)"}[info["format"]]
    lines = [f"{info['path']}: {kind}, {info['size']} bytes, sha256 {info['sha256']}"]
    saved = f"torch {info['torch_version']}" if info["torch_version"] else "torch version not recorded"
    if info["archive_version"] is not None:
        saved += f" (TorchScript archive format {info['archive_version']})"
    lines.append(f"  saved by: {saved}")
    source = {"embedded": "embedded (berth.json)", "package": "from the package",
              "schema": "from forward's schema only (names; no datatypes or shapes)"}[info["signature_source"]]
    if info["load_error"]:
        lines.append(f"  cannot load: {info['load_error']}")
    else:
        lines.append(f"  signature: {source}")
        for spec in info["signature"]["inputs"]:
            lines.append(f"    input  {spec['name']}: {spec['datatype'] or '?'} {_shape_text(spec['shape'])}")
        for spec in info["signature"]["outputs"]:
            lines.append(f"    output {spec['name']}: {spec['datatype'] or '?'} {_shape_text(spec['shape'])}")
        if not info["signature"]["outputs"]:
            lines.append("    outputs: unknown")
    lines.append(f"  metadata: {', '.join(info['metadata_keys']) or 'none'}")
    for flag in info["serve_flags"] or ["serve: needs no flags"]:
        lines.append(f"  serve: {flag}" if not flag.startswith("serve:") else f"  {flag}")
    return "\n".join(lines)


def sign(path, inputs, outputs=(), *, out=None, libraries=(), argument="inputs", on_probe=None):
    """Embeds a signature (berth.json) into the TorchScript file ``path``, written to ``out``
    (default: ``path`` itself) through a temporary file and a rename, after loading the
    result with :func:`berth.load` to check it. Returns the path written. Inputs and
    outputs as :func:`berth.load` takes them; without outputs, they are learnt from a
    probe forward where it succeeds (``berth._model.probe_outputs``; ``on_probe``, a
    function of one string, hears what was learnt or why nothing was). A ``.pt2`` or a
    file that already carries a signature is refused with ValueError, and nothing is
    written."""
    what = "MODEL" if argument == "--input" else "berth.sign(path)"
    path = _check_path(path, what)
    fmt, root, embedded, _ = _archive_facts(path)
    if fmt == "pt2":
        raise ValueError(f"{what}: expected a TorchScript file, got the .pt2 package {path!r}; a .pt2's signature "
                         "comes from the package: export it again with berth.export(module, example_inputs, path)")
    if fmt is None:
        raise ValueError(f"{what}: expected a TorchScript file (a zip with <archive>/data.pkl and <archive>/code/), "
                         f"got {path!r}")
    if embedded is not None:
        raise ValueError(f"{what}: expected a plain TorchScript file, got {path!r}, which already carries a "
                         f"{SIGNATURE_FILE} signature (python -m berth inspect shows it)")
    outputs = outputs or ()
    signature_from_specs(inputs, outputs, argument)  # the options' own errors first
    # in place through a symlink: replace the file it points to, not the link
    target = os.fsdecode(out) if out is not None else os.path.realpath(path)
    out_name = "--out" if argument == "--input" else "out"
    if os.path.isdir(target):
        raise ValueError(f"{out_name}: expected a file path to write, got the directory {target!r}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(target))):
        raise FileNotFoundError(f"{out_name}: expected a path in an existing directory, got {target!r}")
    from ._model import learn_outputs, load
    # The C core checks the signature against forward (one parser) before anything is written.
    model = load(path, libraries=libraries, inputs=inputs, outputs=outputs)
    if not outputs:
        outputs = learn_outputs(model, on_probe) or ()
    signature = signature_from_specs(inputs, outputs, argument)
    with open(path, "rb") as handle:
        data = embed_signature(handle.read(), signature)

    def check(temp):
        model = load(temp, libraries=libraries)
        got = [list(s) for s in model.inputs]
        want = [[s["name"], s["dtype"], tuple(s["shape"])] for s in signature["inputs"]]
        if got != want:
            raise ValueError(f"{what}: the signed copy reads back as {got}, expected {want}")

    write_atomically(target, data, check)
    return target


def _parser(command):
    p = argparse.ArgumentParser(prog=f"python -m berth {command}")
    p.add_argument("model", help="TorchScript file (.pt) or .pt2 package")
    p.add_argument("--library", action="append", default=[], metavar="PATH",
                   help="a library of custom operators the model needs (repeatable)")
    return p


def inspect_main(argv):
    """``python -m berth inspect MODEL [--json]``; returns the exit status."""
    p = _parser("inspect")
    p.description = "What berth knows of a model file: format, signature, metadata, sha256, torch version."
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    from . import BerthError
    try:
        info = inspect(args.model, libraries=args.library)
    except BerthError as e:
        print(f"berth inspect: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError) as e:
        print(f"berth inspect: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2) if args.json else inspect_text(info))
    return 1 if info["load_error"] else 0


def sign_main(argv):
    """``python -m berth sign MODEL --input ... [--output ...] [--out PATH]``."""
    p = _parser("sign")
    p.description = ("Embed a signature (berth.json) into a plain TorchScript file, atomically, checked by "
                     "loading the result.")
    p.add_argument("--input", action="append", required=True, metavar="NAME:DATATYPE:SHAPE", dest="inputs",
                   help="an input, e.g. image:FP32:-1,3,224,224 (-1: any extent; repeat in forward's order)")
    p.add_argument("--output", action="append", default=[], metavar="NAME:DATATYPE:SHAPE", dest="outputs",
                   help="an output, likewise (needed to batch; learnt from a probe forward when left out)")
    p.add_argument("--out", metavar="PATH", help="write the signed file here (default: replace MODEL)")
    args = p.parse_args(argv)
    from . import BerthError
    try:
        written = sign(args.model, args.inputs, args.outputs, out=args.out, libraries=args.library,
                       argument="--input", on_probe=lambda text: print(f"berth sign: {text}", file=sys.stderr))
    except BerthError as e:
        print(f"berth sign: error: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError) as e:
        print(f"berth sign: error: {e}", file=sys.stderr)
        return 2 if not isinstance(e, OSError) or isinstance(e, FileNotFoundError) else 1
    print(f"berth sign: wrote {written}", file=sys.stderr)
    return 0
