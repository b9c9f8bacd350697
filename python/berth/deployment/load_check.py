"""A signature checked against the model before deploy writes it: loaded by berth's C core
(no torch), with the context's operator libraries."""
import os
import sys
import tempfile


def check_loads(model, libraries=(), probe=False, source="--input/--output"):
    """Loads the signed copy with berth's C core (no torch import): a signature that does
    not fit forward (another input count, say) fails here, not when the pod starts. The
    operator libraries are loaded first; one built for the image's libtorch may not load
    into this one, and then the check is left to the image's server. ``source`` names
    where the signature came from in the error. With ``probe``,
    returns the outputs learnt from a probe forward, or None."""
    import berth
    from .._model import learn_outputs, load_libraries
    try:
        load_libraries([path for _, path in libraries], "libraries")
    except berth.ModelLoadError as exc:
        print(f"berth deploy: not checking the signature here: {exc} (the image's server "
              "checks it when it loads the model)", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.pt")
        with open(path, "wb") as handle:
            handle.write(model.data)
        try:
            loaded = berth.load(path)
        except berth.ModelLoadError as exc:
            raise ValueError(f"inputs: the signature from {source} does not fit "
                             f"{model.path!r}: {exc}") from None
        if probe:
            return learn_outputs(loaded, lambda text: print(f"berth deploy: {text}", file=sys.stderr))
    return None
