#!/usr/bin/env bash
# Build a local stand-in for the pytorch/pytorch CUDA runtime image, for machines that cannot pull
# from a registry: Debian bookworm (debootstrap) + its Python 3.11 + torch and torchvision in a venv,
# imported as one layer (`docker import`), so a vfs-backed engine copies it as few times as possible.
#
# Usage: scripts/make_base_image.sh [TAG]        (default TAG: fcn-sweep-base:py3.11-torch2.14.1)
#   TORCH_SPEC     pip requirements for the base     (default: "torch==2.14.1 torchvision==0.29.1")
#   BASE_PINS      exact versions of what torch and torchvision pull in (sympy, networkx, jinja2, fsspec,
#                  filelock, triton, the CUDA wheels...), so the base does not float with PyPI. Default:
#                  the versions the tests ran with beside the default TORCH_SPEC; empty if TORCH_SPEC is set.
#   LOCAL_INDEXES  space-separated folders that each hold a PEP 503 index in simple/ (a local PyPI
#                  mirror); bind-mounted read-only at the same path and searched before PyPI, so
#                  gigabytes of wheels already on disk are not downloaded again (default: none)
#   CA_BUNDLE      this machine's CA bundle, copied in so pip trusts the same TLS roots as the host
#                  (default: /etc/ssl/certs/ca-certificates.crt)
#   MIRROR         Debian mirror (default: http://deb.debian.org/debian)
# Needs root, debootstrap and a running Docker engine. Then: BASE_IMAGE=TAG scripts/docker_smoke.sh
set -euo pipefail

usage() { echo "usage: $0 [TAG]   (env: TORCH_SPEC, BASE_PINS, LOCAL_INDEXES, CA_BUNDLE, MIRROR)" >&2; }
die() { echo "make_base_image: error: $*" >&2; exit 2; }

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
[ $# -le 1 ] || { usage; exit 2; }
TAG=${1:-fcn-sweep-base:py3.11-torch2.14.1}
# The versions the test suite ran with (pip list of its environment) beside torch 2.14.1+cu130.
DEFAULT_PINS="filelock==4.3.1 fsspec==2026.9.0 jinja2==3.1.6 markupsafe==3.0.4 mpmath==1.3.0 networkx==3.6.1
sympy==1.14.0 typing-extensions==4.16.0 setuptools==84.2.1 numpy==1.26.4 pillow==13.0.0 triton==3.8.0
cuda-bindings==13.5.0 cuda-pathfinder==1.9.1 cuda-toolkit==13.0.3.0 nvidia-cublas==13.1.1.3
nvidia-cuda-cupti==13.0.85 nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cudnn-cu13==9.24.0.43
nvidia-cufft==12.0.0.61 nvidia-cufile==1.15.1.6 nvidia-curand==10.4.0.35 nvidia-cusolver==12.0.4.66
nvidia-cusparse==12.6.3.3 nvidia-cusparselt-cu13==0.8.1 nvidia-nccl-cu13==2.30.7 nvidia-nvjitlink==13.5.37
nvidia-nvshmem-cu13==3.4.5 nvidia-nvtx==13.0.85"
if [ -n "${TORCH_SPEC:-}" ]; then BASE_PINS=${BASE_PINS:-}; else BASE_PINS=${BASE_PINS-$DEFAULT_PINS}; fi
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
LOCAL_INDEXES=${LOCAL_INDEXES:-}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm  # its python3 is 3.11, the Python of the pytorch/pytorch images

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot, mount)"
command -v debootstrap >/dev/null || die "debootstrap not found; apt-get install debootstrap"
docker info >/dev/null 2>&1 || die "no Docker engine answers; start dockerd first"
[ -f "$CA_BUNDLE" ] || die "CA_BUNDLE $CA_BUNDLE is not a file"
for dir in $LOCAL_INDEXES; do
    [ -d "$dir/simple" ] || die "LOCAL_INDEXES: $dir has no simple/ index"
done

work=$(mktemp -d /var/tmp/fcn-base.XXXXXX)
root=$work/rootfs
mounts=()
cleanup() {
    local i
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
bind() {  # bind SRC DEST [ro]: mounted until cleanup
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    [ "${3:-}" != ro ] || mount -o remount,bind,ro "$2"
}

start=$SECONDS
echo "== debootstrap $SUITE into $root" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
cp /etc/resolv.conf "$root/etc/resolv.conf"  # for pip inside the chroot; Docker replaces it at run time
bind /proc "$root/proc"
pip_index=()
for dir in $LOCAL_INDEXES; do
    bind "$dir" "$root$dir" ro
    pip_index+=(--extra-index-url "file://$dir/simple")
done

echo "== venv /opt/venv: pip install $TORCH_SPEC (pinned: ${BASE_PINS:-nothing else})" >&2
tr -s ' ' '\n' <<<"$BASE_PINS" >"$root/tmp/base-pins.txt"  # a constraint: pins what is pulled in, adds nothing
# env -i: the host's pip settings (PIP_*, config files) must not leak into the image's install.
in_root() { chroot "$root" env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"; }
in_root python3 -m venv /opt/venv
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
in_root pip install --no-cache-dir --progress-bar off -q "${pip_index[@]}" -c /tmp/base-pins.txt $TORCH_SPEC
rm -f "$root/tmp/base-pins.txt"
in_root python -c "import torch, torchvision; print('base: torch', torch.__version__, 'torchvision', torchvision.__version__)"

# Nothing a run needs: package lists, caches, docs. Fewer bytes, fewer bytes copied per vfs layer.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/locale/* "$root"/var/log/* "$root/root/.cache"
: >"$root/etc/resolv.conf"
for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}"; done
mounts=()
for dir in $LOCAL_INDEXES; do rmdir "$root$dir" 2>/dev/null || true; done

echo "== docker import $TAG" >&2
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $SUITE + python3.11 venv + $TORCH_SPEC ${BASE_PINS:+(pinned deps)}" - "$TAG" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$TAG")
echo "built $TAG: $((size / 1000000)) MB in $((SECONDS - start)) s" >&2
