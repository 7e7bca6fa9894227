#!/usr/bin/env bash
# Build `nvpanoptix3d:host` without a registry: an almost empty rootfs imported with `docker import`; the
# docker backend then bind-mounts this host's /usr, /lib, the Python install and the repo's virtualenv read-only
# (see host_mounts in tests and README). For GPU nodes build docker/Dockerfile instead.
set -euo pipefail
tag=${1:-nvpanoptix3d:host}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{usr,lib,lib64,bin,sbin,etc,tmp,root,work,proc,sys,dev}
chmod 1777 "$root/tmp"
echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
tar -C "$root" -c . | docker import - "$tag" >/dev/null
echo "built $tag"
