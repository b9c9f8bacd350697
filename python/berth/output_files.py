"""Files berth writes (``model.save``, ``save_weights``, ``berth.export``): the target
checked with a clear error first, then written through a temporary file in the same
folder and a rename, so that nothing half-written is ever left at the path.

>>> checked_target("/nonexistent-dir/model.pt")
Traceback (most recent call last):
...
ValueError: path: directory '/nonexistent-dir' does not exist; create it first or choose another path
"""
import os
import tempfile


def checked_target(path, argument="path"):
    """Validate ``path`` and return ``(absolute path, directory)``; a clear ValueError when unwritable."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{argument}: expected a file path (str or os.PathLike), got {type(path).__name__} {path!r}")
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        raise ValueError(f"{argument}: '{path}' is a directory; give a file name such as '{os.path.join(path, 'model.pt')}'")
    if not os.path.isdir(directory):
        raise ValueError(f"{argument}: directory '{directory}' does not exist; create it first or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{argument}: directory '{directory}' is not writable; choose a path you can write to")
    return path, directory


def atomic_write(path, directory, write, suffix=".tmp"):
    """Call ``write(temp_path)`` then rename over ``path``; on failure nothing is left behind."""
    handle, temp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=suffix)
    os.close(handle)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
