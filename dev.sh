#!/usr/bin/env bash
# dev.sh - berth's one entry point on a fresh Debian 12 machine.
#
#   ./dev.sh demo    train the seed model, save it, run it from C, deploy and serve it
#   ./dev.sh test    the whole test suite
#   ./dev.sh TARGET  any Makefile target (sanitize, bench, image-test, ...)
#
# Installs what is missing first (Debian packages as root or through sudo, the venv, the
# native build) and is safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

# Debian's leg (its Python, torch and libtorch; the primary stack's torch comes from PyPI,
# see the Makefile). libopenblas0-pthread matters: without it Debian's libtorch falls back
# to reference BLAS (a 64-row MLP batch ran 12x slower).
PACKAGES=(
  make cmake gcc g++ pkg-config git
  python3 python3-dev python3-venv python3-pip python3-setuptools python3-numpy python3-pytest python3-yaml
  python3-torch libtorch-dev libopenblas0-pthread
  libcjson-dev libmicrohttpd-dev libgnutls28-dev zlib1g-dev
  python3-nbclient python3-ipykernel python3-matplotlib
  python3-fastapi python3-uvicorn python3-flask python3-httpx python3-prometheus-client
  wrk libb64-0d openssl curl clang libclang-rt-14-dev clang-format
  nodejs npm podman buildah runc debootstrap uidmap slirp4netns fuse-overlayfs
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js 20 may come from outside Debian; any node >= 18 with npm will do.
if command -v node >/dev/null && command -v npm >/dev/null; then
  kept=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || kept+=("$p"); done
  missing=("${kept[@]+"${kept[@]}"}")
fi
if ((${#missing[@]})); then
  echo "dev.sh: installing Debian packages: ${missing[*]}"
  SUDO=(); [[ $(id -u) == 0 ]] || SUDO=(sudo)
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

exec make --no-print-directory "${@:-demo}"
