"""Inspecting a saved model without importing torch.

A TorchScript file (``torch.jit.save``) is a zip archive with one top-level folder
holding ``data.pkl``, ``code/`` and, for berth models, ``extra/berth.json`` (the
signature). A torch.export / AOTInductor package (``.pt2``) is a zip archive in the same
layout whose ``archive_format`` says ``pt2``; ``berth.export`` puts the signature in its
metadata. Reading the zip's directory is enough to tell them apart, so ``berth deploy``
stays fast and needs no torch. A plain TorchScript file has no signature; one given as
``NAME:DATATYPE:SHAPE`` options is embedded into the deployed copy as
``extra/berth.json``.
"""
import hashlib
import json
import os
import zipfile
from dataclasses import dataclass

from .. import _core
from ..signature import (SIGNATURE_FILE, V2_DATATYPES, embed_signature,  # noqa: F401 (re-exported)
                         parse_tensor_option, signature_from_options, torchscript_root)

MODEL_FILENAMES = {"torchscript": "model.pt", "pt2": "model.pt2"}  # in a context, by format
# Above this many elements in all, the sample request is written in the binary form.
SAMPLE_JSON_MAX_ELEMENTS = 4096


@dataclass(frozen=True)
class ModelFile:
    """What deploy needs to know about a model file.

    ``signature`` is None for a plain TorchScript file; ``data`` holds the bytes to
    deploy when they differ from the file's (a signature was embedded).
    """
    path: str
    sha256: str
    size: int
    signature: dict
    data: bytes = None
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
        root = torchscript_root(archive)
        if root is None:
            raise ValueError(not_torchscript + " which has no <archive>/data.pkl and "
                             "<archive>/code/ entries")
        member = f"{root}/extra/{SIGNATURE_FILE}"
        if member not in names:  # a plain TorchScript file
            return ModelFile(path=path, sha256=sha256_of(path), size=os.path.getsize(path),
                             signature=None)
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


def with_signature(model, signature, argument="model_path"):
    """A ModelFile whose bytes are model's with ``signature`` embedded as berth.json.

    The zip entries are copied as they are (stored, not recompressed), plus one:
    ``<archive>/extra/berth.json``, which libtorch reads as an extra file.
    """
    if model.signature is not None:
        raise ValueError(f"{argument}: {model.path!r} already carries a {SIGNATURE_FILE} "
                         "signature; --input/--output are for plain TorchScript files")
    with open(model.path, "rb") as handle:
        data = embed_signature(handle.read(), signature)
    return ModelFile(path=model.path, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                     signature=signature, data=data)


def _sample_inputs(signature):
    """(name, shape, datatype, count) of each input: free extents are 1."""
    out = []
    for spec in signature["inputs"]:
        shape = [1 if (not isinstance(d, int) or d < 0) else d for d in spec.get("shape", [1])]
        count = 1
        for dim in shape:
            count *= dim
        datatype = V2_DATATYPES.get(spec.get("dtype", "float32"), "FP32")
        out.append((spec.get("name", "input"), shape, datatype, count))
    return out


def sample_request(signature):
    """An Open Inference Protocol v2 request body (one row of zeros) as a dict.

    >>> sample_request({"inputs": [{"name": "dense_input", "dtype": "float32",
    ...                              "shape": [-1, 3]}]})
    {'inputs': [{'name': 'dense_input', 'shape': [1, 3], 'datatype': 'FP32', 'data': [0.0, 0.0, 0.0]}]}
    """
    inputs = []
    for name, shape, datatype, count in _sample_inputs(signature):
        zero = 0.0 if datatype.startswith("FP") else (False if datatype == "BOOL" else 0)
        inputs.append({"name": name, "shape": shape, "datatype": datatype, "data": [zero] * count})
    return {"inputs": inputs}


def sample_request_file(signature):
    """(file name, bytes, header length or None): the sample request the context ships.

    Small inputs: ``sample-request.json``. Big ones (an image, say) in the binary tensor
    extension, ``sample-request.bin``: a JSON header of header-length bytes, then the
    zeros; post it with ``Inference-Header-Content-Length``.

    >>> name, data, header = sample_request_file({"inputs": [{"name": "x", "dtype": "uint8",
    ...                                            "shape": [-1, 3, 224, 224]}]})
    >>> name, len(data) - header, json.loads(data[:header])["inputs"][0]["parameters"]
    ('sample-request.bin', 150528, {'binary_data_size': 150528})
    """
    inputs = _sample_inputs(signature)
    if sum(count for *_, count in inputs) <= SAMPLE_JSON_MAX_ELEMENTS:
        body = json.dumps(sample_request(signature), separators=(",", ":")) + "\n"
        return "sample-request.json", body.encode(), None
    sizes = {datatype: size for _, datatype, size in _core.DTYPES}
    header = {"inputs": [{"name": name, "shape": shape, "datatype": datatype,
                          "parameters": {"binary_data_size": count * sizes.get(datatype, 1)}}
                         for name, shape, datatype, count in inputs]}
    head = json.dumps(header, separators=(",", ":")).encode()
    zeros = b"".join(bytes(count * sizes.get(datatype, 1)) for _, _, datatype, count in inputs)
    return "sample-request.bin", head + zeros, len(head)


def _inspect_pt2(path, argument):
    from ..pt2 import read_signature

    signature = read_signature(path)
    if not signature or not isinstance(signature.get("inputs"), list) or not signature["inputs"]:
        raise ValueError(f"{argument}: expected a .pt2 package with berth's signature (export it with "
                         f"berth.export(module, example_inputs, path) or model.save('model.pt2')), got a package "
                         f"without one: {path!r}")
    return ModelFile(path=path, sha256=sha256_of(path), size=os.path.getsize(path), signature=signature,
                     format="pt2")
