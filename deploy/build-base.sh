#!/usr/bin/env bash
# Builds the base image deploy/Dockerfile starts from (ARG BASE), with no registry: a Debian
# trixie rootfs made by debootstrap, imported into containers-storage (shared by podman and
# buildah). Run as root. The rootfs tarball is cached, so a second run only imports it.
#
#   bash deploy/build-base.sh [IMAGE]          IMAGE defaults to localhost/lxhub-base:trixie
#
# Environment: LXHUB_BASE_MIRROR (default: the first Debian mirror in /etc/apt/sources.list*,
# else http://deb.debian.org/debian), LXHUB_BASE_CACHE (default /var/cache/lxhub-ci),
# LXHUB_BASE_REBUILD=1 to ignore the cached tarball.
set -euo pipefail

image="${1:-localhost/lxhub-base:trixie}"
suite=trixie
# What the server needs at run time: Node.js (trixie's is 20.x) and the image tools it calls
# (xz/zstd/bzip2 codecs, unsquashfs); ca-certificates for S3 over HTTPS.
include=nodejs,ca-certificates,xz-utils,zstd,bzip2,squashfs-tools
cache="${LXHUB_BASE_CACHE:-/var/cache/lxhub-ci}"

mirror="${LXHUB_BASE_MIRROR:-}"
if [ -z "$mirror" ]; then
  # deb822 "URIs:" lines and one-line "deb URL suite" entries; the first whose path ends in /debian.
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    sed -n -e 's/^URIs:[[:space:]]*//p' -e 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' |
    tr ' ' '\n' | grep -E '^https?://[^ ]+/debian/?$' | head -n 1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

# The cache key names everything that changes the rootfs.
key="$(printf '%s\n' "$suite" "$include" "$mirror" | sha256sum | cut -c1-12)"
tarball="$cache/lxhub-base-$suite-$key.tar"

if [ ! -s "$tarball" ] || [ "${LXHUB_BASE_REBUILD:-0}" = 1 ]; then
  mkdir -p "$cache"
  root="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap $suite from $mirror into $root" >&2
  debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >&2
  # Smaller and reproducible-ish: no apt lists or package cache in the image.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$root"
  trap - EXIT
else
  echo "using cached rootfs $tarball" >&2
fi

podman import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$tarball" "$image" >&2
echo "$image"
