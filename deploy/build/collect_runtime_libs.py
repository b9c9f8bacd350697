#!/usr/bin/env python3
"""Copy the shared-library closure of berth's native modules into a staging root.

Runs inside the Dockerfile's builder stage (stdlib only). ``ldd`` gives every shared
library that the given ELF files load, transitively; libraries owned by a Debian
package that the runtime stage already installs (listed, one package a line, in
``--skip-packages``) are left out, and the rest are copied (symlinks resolved) under
``--dest`` at the path the loader found them, with ``/lib`` folded into ``/usr/lib``.
This is how the runtime image gets libtorch's real dependencies (about 390 MB)
without apt-installing ``libtorch1.13``, whose package dependencies pull in OpenCV,
ffmpeg, GDAL and Qt (1.46 GB).

Usage: collect_runtime_libs.py --skip-packages FILE --dest DIR ELF [ELF ...]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys

_LDD_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)\s*$")
_LDD_DIRECT = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)\s*$")


def ldd_closure(elf_files):
    """Return sorted absolute paths of every library the files load (ldd is transitive)."""
    found = set()
    for elf in elf_files:
        result = subprocess.run(["ldd", elf], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"collect_runtime_libs: ldd {elf} failed: {result.stderr.strip()}")
        for line in result.stdout.splitlines():
            if "not found" in line:
                raise SystemExit(f"collect_runtime_libs: {elf} needs a missing library: "
                                 f"{line.strip()}")
            match = _LDD_LINE.match(line) or _LDD_DIRECT.match(line)
            if match:
                found.add(match.groups()[-1])
    return sorted(found)


def library_owners(dpkg_info="/var/lib/dpkg/info"):
    """Map a library file name to the Debian packages that ship a file of that name."""
    owners = {}
    for listing in glob.glob(os.path.join(dpkg_info, "*.list")):
        package = os.path.basename(listing)[:-len(".list")].split(":", 1)[0]
        with open(listing, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name = os.path.basename(line.rstrip("\n"))
                if ".so" in name:
                    owners.setdefault(name, set()).add(package)
    return owners


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--skip-packages", required=True,
                        help="file listing the packages the runtime stage installs")
    parser.add_argument("--dest", required=True, help="staging root to copy libraries into")
    parser.add_argument("elf", nargs="+", help="native modules whose closure is copied")
    args = parser.parse_args(argv)
    with open(args.skip_packages, encoding="utf-8") as handle:
        skip = {line.strip() for line in handle if line.strip()}
    owners = library_owners()
    copied, total = [], 0
    for path in ldd_closure(args.elf):
        names = {os.path.basename(path), os.path.basename(os.path.realpath(path))}
        if any(owners.get(name, set()) & skip for name in names):
            continue
        target_dir = os.path.dirname(path)
        if target_dir == "/lib" or target_dir.startswith("/lib/"):
            target_dir = "/usr" + target_dir
        target = os.path.join(args.dest, target_dir.lstrip("/"), os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.realpath(path), target)
        os.chmod(target, 0o644)
        copied.append(os.path.join(target_dir, os.path.basename(path)))
        total += os.path.getsize(target)
    manifest = os.path.join(args.dest, "usr/share/berth/runtime-libraries.txt")
    os.makedirs(os.path.dirname(manifest), exist_ok=True)
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in copied))
    print(f"collect_runtime_libs: copied {len(copied)} libraries, {total / 1e6:.1f} MB, "
          f"into {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
