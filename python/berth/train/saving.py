"""Saving models for the C core: TorchScript plus an embedded ``berth.json``, written atomically.

The saved module's ``forward`` takes the model input by its name (e.g.
``forward(self, dense_input)``) in the Keras layout the user trained with, and
is saved in eval mode. ``berth.json`` (a TorchScript extra file) describes the
inputs and outputs for ``berth.load`` and holds the layer config, the final
training metrics and the versions used.

>>> import json, os, tempfile, torch
>>> from berth.train import Sequential, layers
>>> model = Sequential([layers.Dense(2, input_shape=(3,))])
>>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
>>> model.save(path)
>>> meta = read_metadata(path)
>>> meta["inputs"], meta["outputs"][0]["shape"]
([{'name': 'dense_input', 'dtype': 'float32', 'shape': [-1, 3]}], [-1, 2])
"""

import datetime
import importlib.util
import json
import os
import tempfile
import textwrap
import warnings

import torch

from .._version import __version__
from ..output_files import atomic_write, checked_target
from ..signature import SIGNATURE_FILE as METADATA_FILE  # the TorchScript extra file

__all__ = ["save_model", "save_weights", "load_weights", "read_metadata", "metadata", "BERTH_FORMAT"]

BERTH_FORMAT = 1


def _dims(shape):
    return [-1] + [-1 if d is None else int(d) for d in shape]


def metadata(model, export):
    """The ``berth.json`` dict for ``model`` (see the module docstring)."""
    compiled = model._compiled
    training = None
    if compiled is not None:
        record = model._fit_record or {"epochs": 0, "metrics": {}}
        optimizer = compiled["optimizer"]
        training = {
            "loss": compiled["loss"].name,
            "optimizer": getattr(optimizer, "name", type(optimizer).__name__.lower()),
            "optimizer_config": optimizer.get_config() if hasattr(optimizer, "get_config") else repr(optimizer),
            "metrics": {k: float(v) for k, v in record["metrics"].items()},
            "epochs": record["epochs"],
        }
    return {
        "berth_format": BERTH_FORMAT,
        "inputs": [{"name": model._input_name(), "dtype": model._input_dtype_name(), "shape": _dims(model.input_shape)}],
        "outputs": [{"name": model.layers[-1].name, "dtype": "float32", "shape": _dims(model.output_shape)}],
        "batch_dim": 0,
        "model": {"class": "Sequential", "config": model.get_config()},
        "training": training,
        "export": export,
        "berth_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


_SERVING_SOURCE = '''
import torch


class BerthServing(torch.nn.Module):
    """The saved module: runs the layer stack on the named input."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, {name}: torch.Tensor) -> torch.Tensor:
        return self.body({name})
'''


def _serving_module(model):
    """Wrap the model's layers in a module whose forward argument is the input's name.

    TorchScript compiles from source, so the wrapper is written to a scratch file.
    """
    name = model._input_name()
    if not name.isidentifier():
        raise ValueError(f"input name must be a Python identifier, got {name!r}")
    with tempfile.TemporaryDirectory() as scratch:
        source = os.path.join(scratch, "berth_serving.py")
        with open(source, "w") as handle:
            handle.write(textwrap.dedent(_SERVING_SOURCE).format(name=name))
        spec = importlib.util.spec_from_file_location(f"berth_serving_{name}", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        wrapper = module.BerthServing(model.body).eval()
        try:
            return torch.jit.script(wrapper), {"method": "script"}
        except Exception as error:  # a user's torch module TorchScript cannot compile
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            warnings.warn(f"save: TorchScript could not script the model ({reason}); saving a trace instead, "
                          "which fixes any data-dependent control flow to the example's path")
            shape = [2] + [2 if d is None else d for d in model.input_shape]
            example = torch.zeros(shape, dtype=getattr(torch, model._input_dtype_name()))
            with torch.no_grad():
                return torch.jit.trace(wrapper, (example,)), {"method": "trace", "reason": reason}


def _save_pt2(model, path):
    """``model.save("m.pt2")``: torch.export + AOTInductor, the signature in the package."""
    from .. import pt2

    if any(d is None for d in model.input_shape):
        raise ValueError(f"save: a .pt2 package fixes every input dimension but the batch; this model's input_shape "
                         f"is {tuple(model.input_shape)}. Give input_shape in full, or save TorchScript (a .pt path)")
    example = torch.zeros([2] + list(model.input_shape), dtype=getattr(torch, model._input_dtype_name()))
    info = metadata(model, None)
    for key in ("inputs", "outputs", "batch_dim", "export", "berth_format"):
        info.pop(key)
    pt2.export(model.body, example, path, input_names=[model._input_name()], output_names=[model.layers[-1].name],
               metadata=info)


def save_model(model, path):
    """Save ``model`` for ``berth.load``: scripted TorchScript with ``berth.json`` embedded,
    or, for a path ending in ``.pt2``, a torch.export / AOTInductor package (torch >= 2.6)."""
    if not model.built or not len(model.body):
        raise ValueError("save: the model has no built layers; give the first layer input_shape=(...) "
                         "or train it before saving")
    if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".pt2"):
        was_training = model.training
        try:
            model_for_export = model if model._device().type == "cpu" else __import__("copy").deepcopy(model).cpu()
            _save_pt2(model_for_export, path)
        finally:
            model.train(was_training)
        return
    path, directory = checked_target(path)
    was_training = model.training
    model.eval()
    try:
        if model._device().type != "cpu":
            import copy
            model_for_export = copy.deepcopy(model).cpu()
        else:
            model_for_export = model
        scripted, export = _serving_module(model_for_export)
        text = json.dumps(metadata(model, export), indent=1, sort_keys=False)
        atomic_write(path, directory, lambda temp: torch.jit.save(scripted, temp, _extra_files={METADATA_FILE: text}))
    finally:
        model.train(was_training)


def read_metadata(path):
    """The ``berth.json`` dict embedded in a saved model (TorchScript or ``.pt2``)."""
    from ..pt2 import read_signature

    signature = read_signature(path)
    if signature is not None:
        return signature
    files = {METADATA_FILE: ""}
    torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=files)
    if not files[METADATA_FILE]:
        raise ValueError(f"path: '{path}' has no embedded {METADATA_FILE}; it was not saved by berth")
    return json.loads(files[METADATA_FILE])


def save_weights(model, path):
    """Write ``model.state_dict()`` atomically with ``torch.save``."""
    path, directory = checked_target(path)
    if not model.built:
        raise ValueError("save_weights: the model is not built yet, so it has no weights")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, directory, lambda temp: torch.save(state, temp))


def load_weights(model, path):
    """Load a ``save_weights`` file with ``weights_only=True`` (tensors only), checking names and shapes."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path: expected an existing weights file written by save_weights, got {path!r}")
    if not model.built:
        raise ValueError("load_weights: build the model first (give the first layer input_shape=(...)) "
                         "so its weights exist")
    try:
        state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"path: '{path}' is not a weights file written by save_weights ({error})") from None
    if not isinstance(state, dict):
        raise ValueError(f"path: '{path}' holds {type(state).__name__}, expected a dict of tensors")
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: model {tuple(own[k].shape)}, file {tuple(state[k].shape)}"
             for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"missing {missing}")
        if unexpected:
            problems.append(f"unexpected {unexpected}")
        if wrong:
            problems.append("shape mismatch " + "; ".join(wrong))
        raise ValueError(f"path: the weights in '{path}' do not fit this model: " + ", ".join(problems))
    model.load_state_dict(state)
