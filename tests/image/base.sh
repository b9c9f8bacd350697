#!/bin/sh
# Build (once) a Debian bookworm minbase root file system tarball with debootstrap,
# for use as the Dockerfile's base image (`debian:bookworm-slim`) where no registry
# can be pulled from. The tarball is cached: later runs reuse it.
#
# Usage: tests/image/base.sh CACHE_DIR    -> prints the tarball's path
set -eu
cache=${1:?usage: base.sh CACHE_DIR}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/bookworm-minbase.tar"
if [ -s "$tarball" ]; then
    echo "$tarball"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/debootstrap.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
debootstrap --variant=minbase bookworm "$work/root" "$mirror" >"$work/log" 2>&1 || {
    tail -n 30 "$work/log" >&2
    echo "base.sh: debootstrap of bookworm into $work/root failed (see above)" >&2
    exit 1
}
# Same trimming the official slim image does: no apt lists, no docs/man pages.
rm -rf "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/archives/"*.deb \
       "$work/root/usr/share/doc/"* "$work/root/usr/share/man/"*
tar -C "$work/root" --numeric-owner -cf "$work/base.tar" .
mv "$work/base.tar" "$tarball"
echo "$tarball"
