"""berth: from notebook to production for PyTorch models.

Train with a Keras-style API on torch, save TorchScript or a torch.export/AOTInductor
package (``.pt2``, :func:`berth.export`), run it from C with zero-copy
NumPy input, serve it over the Open Inference Protocol, and emit a validated Docker build
context plus Kubernetes manifests.

``import berth`` and ``berth.load(...).predict(...)`` never import the torch Python
package; the training helpers (``berth.Sequential``, ``berth.layers``, ...) do, on first use.

>>> import berth
>>> berth.__version__
'0.1.0'
>>> issubclass(berth.ModelLoadError, berth.BerthError)
True
"""
import importlib

from ._core import BerthError, InferenceError, ModelLoadError, Overloaded
from ._model import Model, TensorSpec, load
from ._version import __version__

__all__ = [
    "BerthError", "InferenceError", "Model", "ModelLoadError", "Overloaded", "TensorSpec",
    "__version__", "load",
    # loaded on first use:
    "Sequential", "layers", "callbacks", "optimizers", "losses", "metrics", "load_model", "utils", "set_seed",
    "deploy", "export", "inspect", "sign",
]

# name -> (module, attribute or None for the module itself); imported on first access so
# that `import berth` stays free of torch.
_LAZY = {
    "Sequential": ("berth.train", "Sequential"),
    "layers": ("berth.train.layers", None),
    "callbacks": ("berth.train.callbacks", None),
    "optimizers": ("berth.train.optimizers", None),
    "losses": ("berth.train.losses", None),
    "metrics": ("berth.train.metrics", None),
    "load_model": ("berth.train", "load_model"),
    "train": ("berth.train", None),
    "utils": ("berth.utils", None),
    "set_seed": ("berth.seeding", "set_seed"),
    "deploy": ("berth.deployment", "deploy"),
    "export": ("berth.pt2", "export"),
    "inspect": ("berth.inspection", "inspect"),
    "sign": ("berth.inspection", "sign"),
    "serving": ("berth.serving", None),
}


def __getattr__(name):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'berth' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
