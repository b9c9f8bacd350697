"""``berth.train.load_model``: a trainable Sequential rebuilt from ``model.save``'s file
(above both saving.py, which writes it, and sequential.py, which it builds)."""
import json
import os

import torch

from ..pt2 import read_signature
from .saving import METADATA_FILE
from .sequential import Sequential


def load_model(path):
    """Rebuild a trainable :class:`~berth.train.Sequential` (architecture and weights) from ``model.save``'s file.

    For inference use ``berth.load``, which serves the file from the C core.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path: expected an existing file saved by model.save, got {path!r}")
    if read_signature(path) is not None:
        raise ValueError(f"path: '{path}' is a .pt2 package, compiled for inference: serve it with berth.load; "
                         "to train again, keep a TorchScript copy (model.save('model.pt')) or save_weights")
    files = {METADATA_FILE: ""}
    scripted = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=files)
    if not files[METADATA_FILE]:
        raise ValueError(f"path: '{path}' has no embedded {METADATA_FILE}; it was not saved by berth")
    meta = json.loads(files[METADATA_FILE])
    model = Sequential.from_config(meta["model"]["config"])
    if not model.built:
        model.build(tuple(None if d == -1 else d for d in meta["inputs"][0]["shape"][1:]))
    model.load_state_dict(scripted.state_dict())
    return model
