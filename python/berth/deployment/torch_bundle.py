"""What a ``.pt2`` image carries from this machine: berth as built here and the libtorch
it was built against.

An AOTInductor package runs only on the libtorch it was compiled for (torch's own rule
for AOTInductor artifacts), and Debian ships libtorch 1.13, which has no AOTInductor.
So the context for a ``.pt2`` holds ``runtime/berth/`` (the imported berth package, its
native modules included) and ``runtime/lib/`` (the libraries of berth's shim that are
not the system's: libtorch_cpu, libc10, libtorch and the OpenMP runtime torch ships),
found with ``ldd`` as the source-built image's collector finds Debian's. Where binutils'
``strip`` is at hand the libraries are copied without their static symbol tables
(``--strip-unneeded``: libtorch_cpu.so goes from 434 to 345 MB; the dynamic symbols
that loading needs stay). The image is
Debian bookworm, whose Python is 3.11 and whose glibc is 2.36: berth must have been
built by a Python 3.11 on a system no newer than that.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

IMAGE_PYTHON = (3, 11)
_SYSTEM_DIRS = ("/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/")
_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)\s*$")
_SKIP = ("__pycache__", "_source")


def berth_package_dir():
    """The imported berth package (``.../berth``)."""
    return Path(__file__).resolve().parent.parent


def shim_path():
    return berth_package_dir() / "libberth_torch.so"


def bundled_libraries(shim):
    """Absolute paths of the non-system libraries ``shim`` loads (ldd is transitive)."""
    result = subprocess.run(["ldd", str(shim)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"berth deploy: ldd {shim} failed: {result.stderr.strip()}")
    found = []
    for line in result.stdout.splitlines():
        if "not found" in line:
            raise RuntimeError(f"berth deploy: berth's shim needs a missing library: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match and not os.path.realpath(match.group(2)).startswith(_SYSTEM_DIRS):
            found.append(match.group(2))
    return sorted(found)


def torch_version_of(libraries):
    """The version of the torch package whose lib/ holds these libraries, or None."""
    for lib in libraries:
        version_file = Path(lib).resolve().parent.parent / "version.py"
        if version_file.is_file():
            match = re.search(r"^__version__ = '([^']+)'", version_file.read_text(), re.M)
            if match:
                return match.group(1)
    return None


def check_bundle(model_signature, argument="model_path"):
    """Raise ValueError unless this machine's berth can go into a .pt2 image."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise ValueError(f"{argument}: a .pt2 image carries berth as built here, for Debian bookworm's Python "
                         f"{'.'.join(map(str, IMAGE_PYTHON))}; this berth runs on Python "
                         f"{sys.version_info.major}.{sys.version_info.minor}: deploy from a Python 3.11 environment")
    shim = shim_path()
    if not shim.is_file():
        raise ValueError(f"{argument}: berth's native modules are not built in {berth_package_dir()}; install berth "
                         "(pip install --no-build-isolation .) before deploying a .pt2")
    libraries = bundled_libraries(shim)
    have = torch_version_of(libraries)
    want = (model_signature or {}).get("torch_version")
    if have and want and have.split("+")[0] != want.split("+")[0]:
        raise ValueError(f"{argument}: the package was compiled by torch {want}, but berth here is built against "
                         f"libtorch {have}; an AOTInductor package runs only on the libtorch it was compiled for: "
                         f"export it again with torch {have.split('+')[0]}, or deploy from an environment with "
                         f"torch {want.split('+')[0]}")
    return libraries, have


def bundle_files(libraries):
    """{context path: Path to copy} for runtime/berth/ and runtime/lib/."""
    files = {}
    package = berth_package_dir()
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if path.is_file() and not any(part in _SKIP for part in relative.parts) and path.suffix in (".py", ".so"):
            files[f"runtime/berth/{relative.as_posix()}"] = path
    for lib in libraries:
        files[f"runtime/lib/{os.path.basename(lib)}"] = _stripped_copy(Path(os.path.realpath(lib)))
    return files


def _stripped_copy(source):
    strip = shutil.which("strip")

    def write(target):
        if strip and subprocess.run([strip, "--strip-unneeded", "-o", str(target), str(source)],
                                    capture_output=True).returncode == 0:
            return
        shutil.copyfile(source, target)
    return write
