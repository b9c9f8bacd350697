"""Builds berth's two native parts: the C core (berth._core, a CPython extension) and
the libtorch shim (berth/libberth_torch.so, C++ built with CMake against libtorch).

libtorch is found the ecosystem's way: an explicit ``Torch_DIR``, else the installed
``torch`` package's CMake prefix, else the system's libtorch (Debian's libtorch-dev).
``BERTH_SANITIZE=1`` builds both parts with AddressSanitizer and UBSan.
"""
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZE = os.environ.get("BERTH_SANITIZE", "") not in ("", "0")
WERROR = os.environ.get("BERTH_WERROR", "") not in ("", "0")  # CI: warnings fail the build
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]


def torch_package_info():
    """(cmake prefix, CXX11 ABI flag) of the importable torch package, or (None, None)."""
    code = ("import torch, torch.utils; "
            "print(torch.utils.cmake_prefix_path); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
    try:
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             timeout=120).stdout.split()
        return out[0], int(out[1])
    except (subprocess.SubprocessError, OSError, IndexError, ValueError):
        return None, None


def find_torch_dir():
    """The directory holding TorchConfig.cmake, with where it came from."""
    candidates = []
    if os.environ.get("Torch_DIR"):
        candidates.append((os.environ["Torch_DIR"], "Torch_DIR"))
    prefix, _ = torch_package_info()
    if prefix:
        candidates.append((os.path.join(prefix, "Torch"), "the torch package"))
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    for d in (f"/usr/lib/{multiarch}/cmake/Torch", "/usr/lib/cmake/Torch", "/usr/share/cmake/Torch",
              "/usr/local/share/cmake/Torch"):
        candidates.append((d, "the system's libtorch"))
    for path, origin in candidates:
        if os.path.isfile(os.path.join(path, "TorchConfig.cmake")):
            return path, origin
    tried = "\n  ".join(p for p, _ in candidates)
    sys.exit("berth: cannot find libtorch (TorchConfig.cmake). Tried:\n  " + tried +
             "\nInstall Debian's libtorch-dev, or the torch package, or set Torch_DIR.")


def torch_prefix(torch_dir):
    """The install prefix above <prefix>/share/cmake/Torch (or <prefix>/lib/cmake/Torch).

    Passed as CMAKE_PREFIX_PATH so that TorchConfig.cmake's find_library calls find that
    prefix's libraries before the system's: with Debian's libtorch-dev also installed,
    a torch wheel's headers would otherwise be linked against /usr/lib's libtorch 1.13.
    """
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(torch_dir))))


class BuildWithShim(build_ext):
    """build_ext that first builds libberth_torch.so with CMake and puts it beside _core."""

    def run(self):
        self.build_shim()
        super().run()

    def build_shim(self):
        torch_dir, origin = find_torch_dir()
        # One build folder per libtorch: the PyPI and Debian stacks build side by side.
        tag = hashlib.sha256(os.path.realpath(torch_dir).encode()).hexdigest()[:8]
        build_dir = os.path.join(HERE, "build", f"shim-{tag}" + ("-asan" if SANITIZE else ""))
        os.makedirs(build_dir, exist_ok=True)
        print(f"berth: building the libtorch shim against {torch_dir} ({origin})")
        subprocess.check_call(["cmake", "-S", os.path.join(HERE, "csrc", "shim"), "-B", build_dir,
                               f"-DTorch_DIR={torch_dir}", f"-DCMAKE_PREFIX_PATH={torch_prefix(torch_dir)}",
                               "-DCMAKE_BUILD_TYPE=Release",
                               f"-DBERTH_SANITIZE={'ON' if SANITIZE else 'OFF'}",
                               f"-DBERTH_WERROR={'ON' if WERROR else 'OFF'}", "-Wno-dev"],
                              stdout=subprocess.DEVNULL if not self.verbose else None)
        subprocess.check_call(["cmake", "--build", build_dir, "-j", str(min(2, os.cpu_count() or 1))])
        self.check_abi(build_dir)
        lib = os.path.join(build_dir, "libberth_torch.so")
        dest_dir = os.path.join(HERE, "python", "berth") if self.inplace else os.path.join(self.build_lib, "berth")
        os.makedirs(dest_dir, exist_ok=True)
        shutil.copy2(lib, os.path.join(dest_dir, "libberth_torch.so"))

    @staticmethod
    def check_abi(build_dir):
        """Refuse a shim whose C++ ABI differs from the torch package in this interpreter."""
        with open(os.path.join(build_dir, "torch_abi.txt")) as f:
            # torch >= 2.7 builds only the new ABI and states no flag: libstdc++'s default, 1.
            shim_abi = 0 if "_GLIBCXX_USE_CXX11_ABI=0" in f.read() else 1
        _, package_abi = torch_package_info()
        if package_abi is not None and package_abi != shim_abi:
            sys.exit(f"berth: the libtorch found by CMake uses _GLIBCXX_USE_CXX11_ABI={shim_abi} but the torch "
                     f"package in {sys.executable} uses {package_abi}; point Torch_DIR at the torch package's "
                     "libtorch so both agree")


class BuildPyWithSource(build_py):
    """Ships berth's source in berth/_source/ so that `berth deploy` run from an installed
    berth writes a context whose image can build berth (an editable install finds the
    checkout itself)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        spec = importlib.util.spec_from_file_location(
            "berth_source_tree", os.path.join(HERE, "python", "berth", "deployment", "source_tree.py"))
        tree = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tree)
        tree.bundle_source(HERE, os.path.join(self.build_lib, "berth", "_source"))


core = Extension(
    "berth._core",
    sources=sorted(glob.glob("csrc/runtime/*.c") + glob.glob("csrc/serving/*.c") + glob.glob("csrc/python/*.c")),
    include_dirs=["csrc", "csrc/include", numpy.get_include()],
    libraries=["cjson", "microhttpd", "z", "pthread", "dl"],
    extra_compile_args=["-std=c11", "-Wall", "-Wextra",
                        "-fvisibility=hidden"] + (["-Werror"] if WERROR else []) + (SANITIZE_FLAGS + ["-O1", "-g"] if SANITIZE else ["-O2"]),
    extra_link_args=SANITIZE_FLAGS if SANITIZE else [],
    depends=sorted(glob.glob("csrc/*/*.h") + glob.glob("csrc/include/berth/*.h")),
)

setup(ext_modules=[core], cmdclass={"build_ext": BuildWithShim, "build_py": BuildPyWithSource},
      package_data={"berth": ["libberth_torch.so"]})
