#!/bin/sh
# Build the sandbox image without a container registry: debootstrap a minimal Debian
# bookworm with python3, `docker import` it, then add the runner and a non-root user.
# The result is equivalent to `docker build sandbox/` (FROM python:3.12-slim) for tools.
#
#   sandbox/build-base.sh IMAGE_TAG
set -eu
tag="${1:?usage: build-base.sh IMAGE_TAG}"
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${AGENTFLOW_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

base="agentflow-sandbox-rootfs:bookworm"  # kept: a new runner only rebuilds the top layer
if ! docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || {
    echo "build-base.sh: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
  }
  debootstrap --variant=minbase --include=python3 bookworm "$work/rootfs" "$mirror" >"$work/log" 2>&1 || {
    tail -20 "$work/log" >&2
    exit 1
  }
  # Slim it: no apt caches, docs or locales are needed to run a tool.
  rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/* \
    "$work/rootfs/usr/share/doc" "$work/rootfs/usr/share/man" "$work/rootfs/usr/share/locale"
  tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
fi

cat >"$work/Dockerfile" <<DOCKERFILE
FROM $base
RUN groupadd --gid 10001 tool && useradd --uid 10001 --gid tool --no-create-home --shell /usr/sbin/nologin tool
COPY runner.py /opt/agentflow/runner.py
USER 10001:10001
WORKDIR /tmp
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
CMD ["sleep", "infinity"]
DOCKERFILE
cp "$here/../agentflow/sandbox/runner.py" "$work/runner.py"
docker build --quiet --tag "$tag" "$work" >/dev/null
echo "$tag"
