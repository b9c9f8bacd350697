"""The Python face of a model run by the C core: ``berth.load`` and ``berth.Model``."""
import json
import os
from typing import NamedTuple, Optional, Tuple

from . import _core


class TensorSpec(NamedTuple):
    """One input or output of a model's signature; ``None`` where unknown.

    >>> TensorSpec("dense_input", "float32", (-1, 10))
    TensorSpec(name='dense_input', dtype='float32', shape=(-1, 10))
    """

    name: str
    dtype: Optional[str]
    shape: Optional[Tuple[int, ...]]


class Model(_core.Model):
    """A TorchScript or ``.pt2`` model run by berth's C core; make one with :func:`berth.load`.

    ``predict(*inputs)`` takes NumPy arrays (or any buffer) and returns an ndarray, or a
    tuple for tuple outputs. Inputs are not copied; outputs own libtorch's memory. Where
    the model carries berth metadata, inputs are checked before forward, and float64 input
    to a float32 input is cast. Safe to call from many threads at once.
    """

    @property
    def inputs(self):
        """Tuple of :class:`TensorSpec`, from berth.json or else forward's argument names."""
        return tuple(TensorSpec(*spec) for spec in self._signature[0])

    @property
    def outputs(self):
        """Tuple of :class:`TensorSpec` from berth.json; empty when the model has none."""
        return tuple(TensorSpec(*spec) for spec in self._signature[1])

    @property
    def metadata(self):
        """The model's embedded berth.json as a dict; ``{}`` when it has none."""
        text = self._metadata_json
        return json.loads(text) if text else {}

    def batcher(self, **options):
        """A dynamic batcher over this model; see :func:`berth.serving.batcher`."""
        from .batching import batcher
        return batcher(self, **options)

    def __repr__(self):
        ins = ", ".join(_spec_text(s) for s in self.inputs)
        return f"<berth.Model {os.path.basename(self.path)!r} inputs=({ins})>"


def probe_outputs(model):
    """The outputs' :class:`TensorSpec` as two forwards tell them, for a model whose
    inputs' dtypes and shapes are known: zeros with every free extent 1, then 2; an
    output extent that changed between them is free (-1), the others are as seen. Names
    are the protocol's (dict keys, flattening paths). Raises ValueError saying why not.

    Honest only as far as zeros go: a model whose output shapes depend on input values
    needs ``--output``.
    """
    import numpy as np
    specs = model.inputs
    unknown = [s.name for s in specs if s.dtype is None or s.shape is None]
    if not specs or unknown:
        raise ValueError(f"the dtype and shape of input(s) {', '.join(map(repr, unknown))} are unknown")
    seen = []
    for extent in (1, 2):
        args = [np.zeros([extent if d == -1 else d for d in s.shape], dtype=s.dtype) for s in specs]
        try:
            out = model.predict(*args)
        except Exception as exc:  # the model's own refusal, in its words
            raise ValueError(f"forward on zeros with free extents {extent} failed: {exc}") from None
        seen.append(list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out])
    first, second = seen
    names = model._output_names
    if len(first) != len(second) or len(names) != len(first) or \
            any(a.ndim != b.ndim or a.dtype != b.dtype for a, b in zip(first, second)):
        raise ValueError("forwards on zeros of two sizes returned different numbers, ranks or dtypes of outputs")
    return tuple(TensorSpec(name, a.dtype.name, tuple(x if x == y else -1 for x, y in zip(a.shape, b.shape)))
                 for name, a, b in zip(names, first, second))


def learn_outputs(model, on_probe=None):
    """:func:`probe_outputs`, or None where the probe fails; ``on_probe`` (a function of
    one string) hears what was learnt, or why nothing was, and which flag states it."""
    try:
        outputs = probe_outputs(model)
    except ValueError as exc:
        if on_probe:
            on_probe(f"outputs not learnt from a probe forward: {exc}; pass --output NAME:DATATYPE:SHAPE "
                     "for each output")
        return None
    if on_probe:
        on_probe("outputs learnt from a probe forward: " + ", ".join(map(_spec_text, outputs))
                 + " (pass --output NAME:DATATYPE:SHAPE to state them instead)")
    return outputs


def load_for_serving(path, optimize=True, inputs=None, outputs=None, on_probe=None):
    """``(model, reason)``: the model optimized for inference, or as saved when libtorch
    cannot freeze it (``reason`` then says why; it is None otherwise).

    What ``python -m berth serve`` and the Flask/FastAPI adapters load. Errors that are
    not about optimizing (a missing or corrupt file) raise as from :func:`load`.

    Given ``inputs`` without ``outputs``, the outputs are learnt first from a probe
    forward (:func:`probe_outputs`, on a copy loaded as saved), so that the model can batch and
    publish complete metadata; ``on_probe`` (a function of one string) hears what was
    learnt, or why nothing was.
    """
    if inputs and not outputs:
        outputs = learn_outputs(load(path, inputs=inputs), on_probe)
    if optimize:
        try:
            return load(path, optimize=True, inputs=inputs, outputs=outputs), None
        except _core.ModelLoadError as e:
            return load(path, inputs=inputs, outputs=outputs), str(e)
    return load(path, inputs=inputs, outputs=outputs), None


def _spec_text(spec):
    shape = "?" if spec.shape is None else "(" + ", ".join(map(str, spec.shape)) + ")"
    return f"{spec.name}: {spec.dtype or '?'} {shape}"


def load_libraries(libraries, argument="libraries"):
    """Load libraries of custom operators (e.g. torchvision's ``_C.so``) for the models
    loaded after them; each path once per process.

    >>> load_libraries("x.so")
    Traceback (most recent call last):
    ...
    TypeError: libraries: expected a list of paths to shared libraries, got str
    """
    if isinstance(libraries, (str, bytes, os.PathLike)) or not hasattr(libraries, "__iter__"):
        raise TypeError(f"{argument}: expected a list of paths to shared libraries, got {type(libraries).__name__}")
    for library in libraries:
        path = os.path.abspath(os.fsdecode(library))
        if not os.path.isfile(path):
            raise ValueError(f"{argument}: expected an existing shared library, got {os.fsdecode(library)!r}")
        if path not in _LOADED_LIBRARIES:
            _core.load_library(path)
            _LOADED_LIBRARIES.add(path)


_LOADED_LIBRARIES = set()


def load(path, *, optimize=False, device=None, libraries=(), inputs=None, outputs=None):
    """Load a model file into berth's C core: TorchScript (scripted or traced), or a
    torch.export / AOTInductor package (``.pt2``, libtorch >= 2.6). The format is told
    from the file's contents, not its name (``Model.format``).

    A ``.pt2`` carries its signature (:func:`berth.export` embeds names, dtypes, shapes
    and the exported batch range; for other packages berth reads the package's own input
    checks), and berth checks every input against it before AOTInductor's kernels, which
    do not check their inputs, run.

    ``libraries``: paths of custom-operator libraries the model needs, loaded first
    (a model using ``torchvision::nms`` needs torchvision's ``_C.so``, say).

    ``inputs`` and ``outputs``: a signature for a plain TorchScript file (one saved by
    ``torch.jit.save``, without berth's ``berth.json``), each entry ``"NAME:DATATYPE:SHAPE"``
    (``"image:FP32:-1,3,224,224"``, -1: any extent) or a ``(name, dtype, shape)`` tuple such
    as a :class:`TensorSpec`; inputs in forward's order. With it the model's inputs are
    checked and, in ``serve``, batched, warmed up and published with their datatype and
    shape. A file that carries a signature, or a ``.pt2``, refuses one (ValueError);
    ``python -m berth sign`` embeds one into the file for good.

    ``device`` (``"cpu"``, the default, or ``"cuda"``/``"cuda:N"``): where the model runs;
    inputs are copied there and outputs back. A libtorch without CUDA refuses
    ``"cuda"`` with ValueError. A ``.pt2`` runs on the device it was compiled for.

    ``optimize=True`` freezes the model and applies libtorch's ``optimize_for_inference``
    (batch norms folded into convolutions, oneDNN-prepacked weights; what
    ``python -m berth serve`` does by default). Results agree with the unoptimized model
    to float rounding; resnet18 ran 25-30% faster per image on the CPU. Parameters and
    buffers become constants, so a forward that updates its own buffers (a call counter)
    no longer does. Modules libtorch cannot freeze (a ModuleDict indexed by a runtime
    key, say) raise ModelLoadError.

    Raises :class:`berth.ModelLoadError` for a missing, unreadable or corrupt file, or one
    that is neither format.

    >>> load(42)
    Traceback (most recent call last):
    ...
    TypeError: berth.load(path): expected a file path (str or os.PathLike), got int
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"berth.load(path): expected a file path (str or os.PathLike), got {type(path).__name__}")
    load_libraries(libraries)
    if device is not None and not isinstance(device, str):
        raise TypeError(f"berth.load(device): expected 'cpu', 'cuda' or 'cuda:N', got {type(device).__name__}")
    signature = None
    if inputs is not None or outputs is not None:
        if inputs is None:
            raise ValueError("berth.load(inputs): expected the inputs' signature with outputs=..., got none")
        from .signature import signature_from_specs
        signature = json.dumps(signature_from_specs(inputs, outputs or (), "inputs"))
    return Model(os.fsdecode(path), optimize=bool(optimize), device=device, signature=signature)
