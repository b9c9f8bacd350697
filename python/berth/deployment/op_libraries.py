"""Custom-operator libraries in a build context (``berth deploy --library PATH``).

Each library is copied into the context's ``libraries/`` and from there into the image's
``/opt/berth/libraries/``; the image's server loads them before the model (``serve
--library``), and the image build loads them once, so that a library the image's libtorch
cannot load fails the build rather than the pod. A library must be built against the
libtorch in the image (Debian's libtorch for a TorchScript model, the one carried in
``runtime/lib/`` for a ``.pt2``) and need no other library the image lacks.

>>> check_libraries("x.so")
Traceback (most recent call last):
...
TypeError: libraries: expected a list of paths to shared libraries, got str
"""
import os
import re
from pathlib import Path

from .dockerfile import LIBRARY_DIR

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


def check_libraries(libraries, argument="libraries"):
    """[(file name, Path)] for the libraries, in order; raises before anything is written.

    Each must be an existing ELF file with a plain file name (it appears in the Dockerfile
    and the entrypoint), and no two may share a name (they share one folder in the image).
    """
    if libraries is None:
        return []
    if isinstance(libraries, (str, bytes, os.PathLike)) or not hasattr(libraries, "__iter__"):
        raise TypeError(f"{argument}: expected a list of paths to shared libraries, got "
                        f"{type(libraries).__name__}")
    found, names = [], {}
    for library in libraries:
        path = Path(os.fsdecode(library))
        if not path.is_file():
            raise ValueError(f"{argument}: expected an existing shared library, got {os.fsdecode(library)!r}")
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic != b"\x7fELF":
            raise ValueError(f"{argument}: expected a shared library (an ELF file, e.g. torchvision's "
                             f"_C.so), got {os.fsdecode(library)!r}, which starts with {magic!r}")
        name = path.name
        if not _SAFE_NAME.match(name):
            raise ValueError(f"{argument}: expected a file name of letters, digits, '.', '_', '+' and "
                             f"'-' (it goes into the Dockerfile), got {name!r}: copy or link the library "
                             "under such a name")
        if name in names:
            raise ValueError(f"{argument}: expected libraries with distinct file names (the image keeps "
                             f"them in one folder), got {names[name]!r} and {os.fsdecode(library)!r}")
        names[name] = os.fsdecode(library)
        found.append((name, path.resolve()))
    return found


def image_paths(libraries):
    """Where the image's server finds each library, in the order given."""
    return [f"{LIBRARY_DIR}/{name}" for name, _ in libraries]


def context_files(libraries):
    """{context path: Path to copy}."""
    return {f"libraries/{name}": path for name, path in libraries}
