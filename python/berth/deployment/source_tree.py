"""Finding berth's own source, which every build context carries.

The image builds berth from source on Debian (its C core links Debian's libtorch, so a
wheel built elsewhere would not do). The source is looked up, in order:

1. ``$BERTH_SOURCE_DIR``: a berth checkout named by the user;
2. ``berth/_source/``: a copy of the source shipped inside an installed berth (the
   root CMakeLists.txt runs this file at install time to put it there, so a
   pip-installed berth can deploy);
3. the checkout that the imported ``berth`` package lives in (``python/berth`` of a
   repository, as in development and editable installs).
"""
import os
from pathlib import Path

TOP_LEVEL_FILES = ("pyproject.toml", "CMakeLists.txt", "setup.cfg", "MANIFEST.in", "README.md",
                   "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE")
TOP_LEVEL_DIRS = ("csrc", "python/berth")
_SKIP_DIRS = {"__pycache__", "build", "dist", "node_modules", ".git", "_source",
              ".pytest_cache", ".mypy_cache"}
_SKIP_SUFFIXES = (".so", ".o", ".a", ".pyc", ".pyo", ".egg-info", "~", ".swp")


def is_source_root(path):
    """True when ``path`` looks like a berth source tree."""
    path = Path(path)
    return (path / "pyproject.toml").is_file() \
        and (path / "csrc").is_dir() and (path / "python" / "berth" / "__init__.py").is_file()


def find_source_root():
    """Return the berth source tree to copy into a build context, or raise."""
    tried = []
    env = os.environ.get("BERTH_SOURCE_DIR")
    if env:
        if is_source_root(env):
            return Path(env).resolve()
        raise FileNotFoundError(
            f"BERTH_SOURCE_DIR: expected a berth source tree (pyproject.toml, "
            f"csrc/ and python/berth/), got {env!r}")
    package_dir = Path(__file__).resolve().parent.parent
    bundled = package_dir / "_source"
    if is_source_root(bundled):
        return bundled
    tried.append(str(bundled))
    checkout = package_dir.parent.parent
    if is_source_root(checkout):
        return checkout
    tried.append(str(checkout))
    raise FileNotFoundError(
        "berth source: expected berth's source tree to build the image from, found none "
        f"(looked in {', '.join(tried)}); set BERTH_SOURCE_DIR to a berth checkout")


def source_files(root):
    """Sorted (relative path, absolute path) pairs of the files a build needs."""
    root = Path(root)
    found = []
    for name in TOP_LEVEL_FILES:
        if (root / name).is_file():
            found.append((name, root / name))
    for top in TOP_LEVEL_DIRS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
            for filename in sorted(filenames):
                if filename.endswith(_SKIP_SUFFIXES) or filename.startswith("."):
                    continue
                full = Path(dirpath) / filename
                if full.is_file():
                    found.append((full.relative_to(root).as_posix(), full))
    return sorted(found)


def bundle_source(root, dest):
    """Copy the files a build needs from ``root`` into ``dest`` (e.g. ``berth/_source``).

    The build runs this file as a script (``python source_tree.py ROOT DEST``) while
    installing berth, so that an installed berth carries its own source; berth itself is
    not importable then.
    Returns the number of files copied.
    """
    dest = Path(dest)
    files = source_files(root)
    for relative, full in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(full.read_bytes())
    return len(files)


if __name__ == "__main__":
    import sys
    bundle_source(sys.argv[1], sys.argv[2])
