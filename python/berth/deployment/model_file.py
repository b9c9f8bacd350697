"""Inspecting a saved berth model without importing torch.

A TorchScript file (``torch.jit.save``) is a zip archive with one top-level folder
holding ``data.pkl``, ``code/`` and, for berth models, ``extra/berth.json`` (the
signature). A torch.export / AOTInductor package (``.pt2``) is a zip archive in the same
layout whose ``archive_format`` says ``pt2``; ``berth.export`` puts the signature in its
metadata. Reading the zip's directory is enough to tell them apart, so ``berth deploy``
stays fast and needs no torch.
"""
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass

SIGNATURE_FILE = "berth.json"


@dataclass(frozen=True)
class ModelFile:
    """What deploy needs to know about a model file."""
    path: str
    sha256: str
    size: int
    signature: dict
    format: str = "torchscript"  # or "pt2"


def sha256_of(path, chunk=1 << 20):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_model(path, argument="model_path"):
    """Check that ``path`` is a berth TorchScript model and return a ModelFile.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not
    TorchScript or carries no valid ``berth.json`` signature.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument}: expected a path to a .pt file, "
                        f"got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "a directory" if os.path.isdir(path) else "nothing"
        raise FileNotFoundError(f"{argument}: expected an existing TorchScript model file, "
                                f"got {path!r} ({what} is there)")
    not_torchscript = (f"{argument}: expected a TorchScript model saved with "
                       f"torch.jit.save / berth (a zip with data.pkl and code/), got {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(not_torchscript + " which is not a zip archive")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names if "/" in name}
        if any(f"{r}/archive_format" in names and archive.read(f"{r}/archive_format").startswith(b"pt2")
               for r in roots):
            return _inspect_pt2(path, argument)
        root = next((r for r in sorted(roots)
                     if f"{r}/data.pkl" in names
                     and any(n.startswith(f"{r}/code/") for n in names)), None)
        if root is None:
            raise ValueError(not_torchscript + " which has no <archive>/data.pkl and "
                             "<archive>/code/ entries")
        member = f"{root}/extra/{SIGNATURE_FILE}"
        if member not in names:
            raise ValueError(f"{argument}: expected a berth model with an embedded "
                             f"{SIGNATURE_FILE} signature (save it with berth or with "
                             f"torch.jit.save(..., _extra_files={{'{SIGNATURE_FILE}': ...}})), "
                             f"got a TorchScript file without one: {path!r}")
        raw = archive.read(member)
    try:
        signature = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{argument}: expected {SIGNATURE_FILE} inside {path!r} to be JSON, "
                         f"got invalid JSON ({exc})") from None
    if not isinstance(signature, dict) or not isinstance(signature.get("inputs"), list) \
            or not signature["inputs"]:
        raise ValueError(f"{argument}: expected {SIGNATURE_FILE} inside {path!r} to hold an "
                         f"object with a non-empty 'inputs' list, got {signature!r}")
    return ModelFile(path=path, sha256=sha256_of(path), size=os.path.getsize(path),
                     signature=signature)


def sample_request(signature):
    """An Open Inference Protocol v2 request body (one row of zeros) for the README.

    >>> sample_request({"inputs": [{"name": "dense_input", "dtype": "float32",
    ...                              "shape": [-1, 3]}]})
    {'inputs': [{'name': 'dense_input', 'shape': [1, 3], 'datatype': 'FP32', 'data': [0.0, 0.0, 0.0]}]}
    """
    datatypes = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int64": "INT64",
                 "int32": "INT32", "int16": "INT16", "int8": "INT8", "uint8": "UINT8",
                 "bool": "BOOL"}
    inputs = []
    for spec in signature["inputs"]:
        shape = [1 if (not isinstance(d, int) or d < 0) else d for d in spec.get("shape", [1])]
        count = 1
        for dim in shape:
            count *= dim
        datatype = datatypes.get(spec.get("dtype", "float32"), "FP32")
        zero = 0.0 if datatype.startswith("FP") else (False if datatype == "BOOL" else 0)
        inputs.append({"name": spec.get("name", "input"), "shape": shape,
                       "datatype": datatype, "data": [zero] * count})
    return {"inputs": inputs}


def _inspect_pt2(path, argument):
    from ..pt2 import read_signature

    signature = read_signature(path)
    if not signature or not isinstance(signature.get("inputs"), list) or not signature["inputs"]:
        raise ValueError(f"{argument}: expected a .pt2 package with berth's signature (export it with "
                         f"berth.export(module, example_inputs, path) or model.save('model.pt2')), got a package "
                         f"without one: {path!r}")
    return ModelFile(path=path, sha256=sha256_of(path), size=os.path.getsize(path), signature=signature,
                     format="pt2")
