"""``berth.export``, in ``berth.pt2``: any ``nn.Module`` to a torch.export / AOTInductor package (``.pt2``).

The package runs from berth's C core with no Python at run time (``berth.load``,
``berth serve``), batched wherever the batch dimension was exported dynamic. berth embeds
its signature in the package metadata (``berth.json``: names, dtypes, shapes with -1 for
the batch dimension, and the range it was exported for), so inputs are checked before
AOTInductor's kernels, which do not check them, see them.

Needs torch >= 2.6. Compiling runs a C++ compiler: seconds for a small MLP, a minute or
more for a conv net on two cores (logged at INFO on the ``berth`` logger;
``berth.load(path).metadata["export"]`` records the export time).

>>> import os, tempfile, numpy as np, torch, berth
>>> torch.manual_seed(0) and None
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
>>> path = berth.export(net, torch.zeros(2, 3), os.path.join(tempfile.mkdtemp(), "net.pt2"))
>>> model = berth.load(path)
>>> model.format, model.inputs[0].shape, model.max_batch
('pt2', (-1, 3), 4096)
>>> x = np.ones((5, 3), np.float32)
>>> bool(np.allclose(model.predict(x), net(torch.from_numpy(x)).detach().numpy(), atol=1e-6))
True
"""
import datetime
import inspect
import json
import logging
import time

from ._version import __version__
from .signature import SIGNATURE_FILE as SIGNATURE_KEY  # the package metadata key

__all__ = ["export", "MIN_TORCH", "SIGNATURE_KEY"]

# AOTIModelPackageLoader and aoti_compile_and_package arrived in torch 2.6.
MIN_TORCH = (2, 6)
DEFAULT_MAX_BATCH = 4096
log = logging.getLogger("berth")


def _torch():
    import torch
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise RuntimeError(f"berth.export needs torch >= {'.'.join(map(str, MIN_TORCH))} (torch.export and "
                           f"AOTInductor packages); this is torch {torch.__version__}. Save TorchScript instead "
                           "(model.save('model.pt') or torch.jit.save)")
    return torch


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _as_tensors(torch, example_inputs):
    if isinstance(example_inputs, (list, tuple)):
        items = list(example_inputs)
    else:
        items = [example_inputs]
    if not items:
        raise ValueError("example_inputs: expected a tensor or a tuple of tensors (one per forward argument), got "
                         "an empty sequence")
    tensors = []
    for i, item in enumerate(items):
        if isinstance(item, torch.Tensor):
            tensors.append(item.detach())
        elif hasattr(item, "__array__"):
            import numpy as np
            tensors.append(torch.from_numpy(np.ascontiguousarray(item)))
        else:
            raise TypeError(f"example_inputs[{i}]: expected a torch.Tensor or NumPy array, got {type(item).__name__}")
    return tensors


def _input_names(module, count, input_names):
    if input_names is not None:
        names = list(input_names)
        if len(names) != count or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"input_names: expected {count} non-empty strings (one per example input), got {names!r}")
        return names
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    if len(params) >= count:
        return [p.name for p in params[:count]]
    return [f"input_{i}" for i in range(count)]


def _flatten_outputs(torch, result, output_names):
    """[(name, tensor)] in the order AOTInductor returns them (pytree order)."""
    if isinstance(result, torch.Tensor):
        pairs = [("output_0", result)]
    elif isinstance(result, dict):
        pairs = [(str(k), v) for k, v in result.items()]
    elif isinstance(result, (list, tuple)):
        pairs = [(f"output_{i}", v) for i, v in enumerate(result)]
    else:
        raise TypeError(f"berth.export: the model returned {type(result).__name__}; berth serves a tensor, or a "
                        "tuple, list or dict of tensors")
    for name, value in pairs:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"berth.export: output {name!r} is a {type(value).__name__}; berth serves tensors only "
                            "(return nested structures flattened into a tuple or dict of tensors)")
    if output_names is not None:
        names = list(output_names)
        if len(names) != len(pairs):
            raise ValueError(f"output_names: the model returns {len(pairs)} outputs, got {len(names)} names {names!r}")
        pairs = [(n, t) for n, (_, t) in zip(names, pairs)]
    return pairs


def _first_lines(error, count=3):
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return "\n".join(lines[:count]) or type(error).__name__


def _export_error(error, dynamic_batch):
    text = str(error)
    if dynamic_batch and ("specializ" in text or "Constraints violated" in text or "batch" in text):
        hint = ("the model fixes the batch dimension somewhere (a view or reshape with a literal batch size, or a "
                "Python branch on x.shape[0]); use -1 or x.shape[0] there, or pass dynamic_batch=False to export "
                "a fixed batch size")
    else:
        hint = ("torch.export traces forward once; Python control flow on tensor values and unsupported "
                "operators stop it. See torch.export's message above")
    return ValueError(f"berth.export: torch.export could not export the model:\n{_first_lines(error)}\nWhat to "
                      f"change: {hint}.")


def _spec(name, tensor, batch, dynamic_batch, max_batch):
    shape = list(tensor.shape)
    ranges = [None] * len(shape)
    if dynamic_batch and shape and shape[0] == batch:
        shape[0] = -1
        ranges[0] = [1, max_batch]
    return {"name": name, "dtype": _dtype_name(tensor.dtype), "shape": shape, "ranges": ranges}


def export(module, example_inputs, path, *, dynamic_batch=True, max_batch=DEFAULT_MAX_BATCH, input_names=None,
           output_names=None, metadata=None):
    """Export ``module`` with torch.export, compile it with AOTInductor, write ``path`` (a ``.pt2``).

    ``example_inputs`` is a tensor (or NumPy array), or a tuple with one per forward
    argument. With ``dynamic_batch`` the first dimension of every input is exported
    dynamic, from 1 to ``max_batch``, so berth's batcher can stack requests; outputs whose
    first dimension follows the batch get -1 there. Names come from forward's arguments
    (or ``input_names``) and, for outputs, from a returned dict's keys (or
    ``output_names``; else ``output_0``, ...). ``metadata`` (a JSON-able dict) is merged
    into the embedded ``berth.json``. The file is written atomically: on any failure
    nothing is left at ``path``. Returns ``path``.

    >>> export(object(), (), "x.pt2")
    Traceback (most recent call last):
    ...
    TypeError: module: expected a torch.nn.Module, got object
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    from .output_files import atomic_write, checked_target
    path, directory = checked_target(path)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 2 <= max_batch <= 2**31 - 1:
        raise ValueError(f"max_batch: expected an integer from 2 to 2**31-1, got {max_batch!r}")
    tensors = _as_tensors(torch, example_inputs)
    names = _input_names(module, len(tensors), input_names)
    batch = tensors[0].shape[0] if tensors[0].dim() else None
    if dynamic_batch:
        bad = [n for n, t in zip(names, tensors) if t.dim() == 0 or t.shape[0] != batch]
        if bad:
            raise ValueError(f"example_inputs: with dynamic_batch=True every input needs the same first "
                             f"(batch) dimension; {bad} differ from {names[0]!r}'s {batch}. Pass "
                             "dynamic_batch=False to export fixed shapes")
        if batch < 2:
            # torch.export specializes a dimension whose example is 1: show it two rows.
            tensors = [t.expand(2, *t.shape[1:]).contiguous() for t in tensors]
            batch = 2
    was_training = module.training
    module.eval()
    try:
        start = time.perf_counter()
        dynamic_shapes = None
        if dynamic_batch:
            dim = torch.export.Dim("batch", min=1, max=max_batch)
            dynamic_shapes = tuple({0: dim} for _ in tensors)
        try:
            program = torch.export.export(module, tuple(tensors), dynamic_shapes=dynamic_shapes)
        except Exception as error:  # torch.export's own errors: say what to change
            raise _export_error(error, dynamic_batch) from error
        export_seconds = time.perf_counter() - start
        with torch.no_grad():
            outputs = _flatten_outputs(torch, program.module()(*tensors), output_names)
        signature = {
            "berth_format": 1,
            "inputs": [_spec(n, t, batch, dynamic_batch, max_batch) for n, t in zip(names, tensors)],
            "outputs": [_spec(n, t, batch, dynamic_batch, max_batch) for n, t in outputs],
            "batch_dim": 0 if dynamic_batch else None,
        }
        for spec in signature["outputs"]:
            spec.pop("ranges")
        info = dict(metadata or {})
        info.update(signature)
        info.setdefault("berth_version", __version__)
        info.setdefault("torch_version", torch.__version__)
        info.setdefault("created", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
        info["export"] = dict({"method": "torch.export+aoti", "export_seconds": round(export_seconds, 3)},
                              **(info.get("export") or {}))
        text = json.dumps(info, indent=1)
        start = time.perf_counter()
        atomic_write(path, directory, lambda temp: torch._inductor.aoti_compile_and_package(
            program, package_path=temp, inductor_configs={"aot_inductor.metadata": {SIGNATURE_KEY: text}}),
            suffix=".pt2")
        log.info("berth.export: %s exported in %.1f s, compiled in %.1f s", path, export_seconds,
                 time.perf_counter() - start)
    finally:
        module.train(was_training)
    return path


def read_signature(path):
    """The ``berth.json`` embedded in a ``.pt2`` package, or ``None`` (no torch needed).

    >>> read_signature(__file__) is None
    True
    """
    import zipfile
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if "/data/aotinductor/" in name and name.endswith("_metadata.json"):
                entries = json.loads(archive.read(name))
                text = entries.get(SIGNATURE_KEY)
                return json.loads(text) if text else None
    return None

