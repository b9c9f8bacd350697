#!/bin/sh
# Build (once) a Debian bookworm root file system tarball made the way the official
# `debian:bookworm-slim` image is (debootstrap --variant=minbase, then the same "slim"
# trimming: dpkg excludes documentation, man pages and translations, now and for every
# later install), for use as the Dockerfile's base image where no registry can be pulled
# from. The tarball is cached: later runs reuse it.
#
# Usage: tests/image/base.sh CACHE_DIR    -> prints the tarball's path
set -eu
cache=${1:?usage: base.sh CACHE_DIR}
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tarball="$cache/bookworm-slim-v2.tar"
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
# The official slim image's trimming (debuerreotype's slimify): these paths are not
# installed by dpkg from now on, and are removed from what debootstrap installed. Its
# apt "docker-clean" hook is left out: it would empty a package cache mounted into a
# build (the Dockerfile cleans up after itself).
cat >"$work/root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CFG
find "$work/root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$work/root/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$work/root/usr/share/groff/"* "$work/root/usr/share/info/"* \
       "$work/root/usr/share/linda/"* "$work/root/usr/share/lintian/"* \
       "$work/root/usr/share/locale/"* "$work/root/usr/share/man/"* \
       "$work/root/var/lib/apt/lists/"* "$work/root/var/cache/apt/"*.bin \
       "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/log/"*.log
tar -C "$work/root" --numeric-owner -cf "$work/base.tar" .
mv "$work/base.tar" "$tarball"
echo "$tarball"
