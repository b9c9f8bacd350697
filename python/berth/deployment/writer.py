"""Writing a build context atomically: all files or none.

Files are written into a fresh temporary directory beside the destination, then the
directory is renamed into place. Modes are fixed (0644 files, 0755 directories) so
the same content gives the same tree whatever the umask.
"""
import os
import shutil
import tempfile
from pathlib import Path


def check_destination(out, force, argument="out"):
    """Refuse an existing file, or an existing non-empty directory without ``force``."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise FileExistsError(f"{argument}: expected a directory to create, got {str(out)!r} "
                                  "which is an existing file")
        if any(out.iterdir()) and not force:
            raise FileExistsError(f"{argument}: expected a new or empty directory, got "
                                  f"{str(out)!r} which is not empty (pass --force / "
                                  "force=True to replace it)")


def write_tree(out, files, force=False):
    """Write ``files`` ({relative posix path: bytes, a Path to copy from, or a function
    that writes the file at the path it is given}) as directory ``out``, atomically."""
    out = Path(out).absolute()
    check_destination(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for relative in sorted(files):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(files[relative], os.PathLike):  # big files (libtorch) are copied
                shutil.copyfile(files[relative], target)
            elif callable(files[relative]):
                files[relative](target)
            else:
                with open(target, "wb") as handle:
                    handle.write(files[relative])
            os.chmod(target, 0o644)
        for dirpath, _dirs, _files in os.walk(staging):
            os.chmod(dirpath, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "tree")
            try:
                os.rename(staging, out)
            except OSError:
                os.rename(old / "tree", out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
