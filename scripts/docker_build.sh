#!/usr/bin/env bash
# Build the fcn-sweep image: stage FashionMNIST into the build context (docker/fashion-mnist/, git-
# ignored), then `docker build` with BuildKit. The image carries the data; see docs/docker.md.
# Usage: scripts/docker_build.sh [DOCKER BUILD OPTIONS...]   e.g. -t fcn-sweep --build-arg BASE_IMAGE=...
#   FCN_SWEEP_DATA  where the four IDX .gz files are (default: Debian's /usr/share/datasets/fashion-mnist)
#   DOCKER          the docker client (default: docker); it must speak BuildKit
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h | --help) echo "usage: $0 [DOCKER BUILD OPTIONS...]   (env: FCN_SWEEP_DATA, DOCKER)"; exit 0 ;; esac
die() { echo "docker_build: error: $*" >&2; exit 2; }

DOCKER=${DOCKER:-docker}
src=${FCN_SWEEP_DATA:-/usr/share/datasets/fashion-mnist}
names=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
for name in "${names[@]}"; do
    [ -f "$src/$name.gz" ] || die "$src/$name.gz missing; apt-get install dataset-fashion-mnist or set FCN_SWEEP_DATA"
done
command -v "$DOCKER" >/dev/null || die "docker client '$DOCKER' not found"

mkdir -p docker/fashion-mnist
for name in "${names[@]}"; do cp -p "$src/$name.gz" docker/fashion-mnist/; done  # md5 is checked in the build
DOCKER_BUILDKIT=1 exec "$DOCKER" build "$@" .
