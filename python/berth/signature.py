"""A model's signature (``berth.json``) as users give it, and its embedding into a
TorchScript file; shared by ``berth.load(inputs=...)``, ``serve``/``deploy``
``--input``/``--output`` and ``python -m berth sign``. No torch needed.

berth.json is an object ``{"berth_format": 1, "inputs": [...], "outputs": [...]}`` whose
entries are ``{"name", "dtype", "shape"}`` (-1: any extent). The C core parses it, from
the file or as given here (``_core.Model(path, signature=text)``): one parser.

>>> signature_from_specs(["x:FP32:-1,10"], [("y", "float32", (-1, 1))])["outputs"]
[{'name': 'y', 'dtype': 'float32', 'shape': [-1, 1]}]
"""
import io
import json
import os
import tempfile
import zipfile

from . import _core

SIGNATURE_FILE = "berth.json"

# berth.json dtype -> Open Inference Protocol v2 datatype, from the C core's one table.
V2_DATATYPES = {name: datatype for name, datatype, _ in _core.DTYPES}


def _dtype_of(datatype, flag, text):
    by_v2 = {v: k for k, v in V2_DATATYPES.items()}
    dtype = by_v2.get(str(datatype).upper()) or (str(datatype).lower()
                                                 if str(datatype).lower() in V2_DATATYPES else None)
    if dtype is None:
        raise ValueError(f"{flag}: expected a DATATYPE among {', '.join(by_v2)} (or "
                         f"{', '.join(V2_DATATYPES)}), got {datatype!r} in {text!r}")
    return dtype


def parse_tensor_option(text, flag="--input"):
    """One ``NAME:DATATYPE:SHAPE`` option as a berth.json entry; -1 is any extent.

    >>> parse_tensor_option("image:FP32:-1,3,224,224")
    {'name': 'image', 'dtype': 'float32', 'shape': [-1, 3, 224, 224]}
    >>> parse_tensor_option("ids:int64:-1,-1")
    {'name': 'ids', 'dtype': 'int64', 'shape': [-1, -1]}
    >>> parse_tensor_option("x:FP32")
    Traceback (most recent call last):
    ...
    ValueError: --input: expected NAME:DATATYPE:SHAPE such as 'x:FP32:-1,10', got 'x:FP32'
    """
    usage = f"{flag}: expected NAME:DATATYPE:SHAPE such as 'x:FP32:-1,10', got {text!r}"
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ValueError(usage)
    name, datatype, shape_text = parts
    dtype = _dtype_of(datatype, flag, text)
    try:
        shape = [int(d) for d in shape_text.split(",")] if shape_text else []
    except ValueError:
        raise ValueError(f"{flag}: expected SHAPE as comma-separated integers (-1: any "
                         f"extent), got {shape_text!r} in {text!r}") from None
    if any(d < -1 for d in shape):
        raise ValueError(f"{flag}: expected extents >= -1, got {shape_text!r} in {text!r}")
    return {"name": name, "dtype": dtype, "shape": shape}


def spec_entry(spec, argument="inputs"):
    """A berth.json entry from ``"NAME:DATATYPE:SHAPE"``, a ``(name, dtype, shape)`` tuple
    (a :class:`berth.TensorSpec`, say; ``None`` in the shape is any extent) or a dict.

    >>> spec_entry(("ids", "INT64", (None, 8)))
    {'name': 'ids', 'dtype': 'int64', 'shape': [-1, 8]}
    >>> spec_entry(("x", "float32"))
    Traceback (most recent call last):
    ...
    ValueError: inputs: expected 'NAME:DATATYPE:SHAPE' or (name, dtype, shape), got ('x', 'float32')
    """
    if isinstance(spec, str):
        return parse_tensor_option(spec, argument)
    if isinstance(spec, dict):
        spec = (spec.get("name"), spec.get("dtype"), spec.get("shape"))
    if not isinstance(spec, (tuple, list)) or len(spec) != 3:
        raise ValueError(f"{argument}: expected 'NAME:DATATYPE:SHAPE' or (name, dtype, shape), got {spec!r}")
    name, dtype, shape = spec
    if not isinstance(name, str) or not name:
        raise ValueError(f"{argument}: expected a non-empty name (str), got {name!r} in {spec!r}")
    if not isinstance(shape, (tuple, list)) or not all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= -1) for d in shape):
        raise ValueError(f"{argument}: expected a shape as a tuple of integers >= -1 (-1 or None: any "
                         f"extent), got {shape!r} in {spec!r}")
    return {"name": name, "dtype": _dtype_of(dtype, argument, spec),
            "shape": [-1 if d is None else d for d in shape]}


def signature_from_specs(inputs, outputs=(), argument="inputs"):
    """berth.json (a dict) from inputs and outputs given as :func:`spec_entry` takes them."""
    out_argument = "outputs" if argument == "inputs" else "--output"
    for given, what in ((inputs, argument), (outputs, out_argument)):
        if isinstance(given, (str, bytes)) or not hasattr(given, "__iter__"):
            raise TypeError(f"{what}: expected a list of 'NAME:DATATYPE:SHAPE' or (name, dtype, shape), "
                            f"got {type(given).__name__}")
    signature = {"berth_format": 1, "inputs": [spec_entry(s, argument) for s in inputs]}
    if not signature["inputs"]:
        raise ValueError(f"{argument}: expected at least one input, got none")
    outputs = [spec_entry(s, out_argument) for s in outputs]
    if outputs:
        signature["outputs"] = outputs
    return signature


def signature_from_options(inputs, outputs=()):
    """berth.json from ``--input`` and ``--output`` options (lists of strings)."""
    return signature_from_specs(inputs, outputs or (), "--input")


def torchscript_root(archive):
    """The top-level folder of a TorchScript zip (the one with data.pkl and code/), or None."""
    names = archive.namelist()
    roots = sorted({name.split("/", 1)[0] for name in names if "/" in name})
    return next((r for r in roots if f"{r}/data.pkl" in names
                 and any(n.startswith(f"{r}/code/") for n in names)), None)


def embed_signature(data, signature):
    """The bytes of TorchScript archive ``data`` with ``signature`` added as
    ``<archive>/extra/berth.json``, which libtorch reads as an extra file. Entries are
    copied as they are (stored, not recompressed); an existing berth.json is refused."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        root = torchscript_root(src) or src.infolist()[0].filename.split("/", 1)[0]
        member = f"{root}/extra/{SIGNATURE_FILE}"
        if member in src.namelist():
            raise ValueError(f"the archive already carries {member}")
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr(member, json.dumps(signature))
    return out.getvalue()


def write_atomically(path, data, check=None):
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename:
    readers see the old file or the new one, never part of one. ``check(temp_path)``, if
    given, runs on the complete temporary file before the rename; if it raises, nothing
    is renamed and the temporary file is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".berth-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
