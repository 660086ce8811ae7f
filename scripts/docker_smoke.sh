#!/usr/bin/env bash
# Does the image reproduce a run? Build it, train a one-epoch tiny experiment bare on this machine
# (CPU), re-run that run directory inside the container (`train --from`, CPU, --network none, the run
# mounted read-only, outputs to a mounted volume), then check the container's run directory and that
# its metrics equal the bare run's, time/* keys aside. Exits 0 only if they are equal.
#
# Usage: scripts/docker_smoke.sh
#   BASE_IMAGE          base for the build (default: the Dockerfile's, pytorch/pytorch:...-runtime);
#                       without a registry: scripts/make_base_image.sh, then BASE_IMAGE=fcn-sweep-base:...
#   IMAGE               tag to build (default: fcn-sweep:smoke)
#   PYTHON              interpreter for the bare run, with this package installed (default: .venv/bin/python)
#   DOCKER              docker client, one that speaks BuildKit (default: docker)
#   DOCKER_BUILD_FLAGS  extra `docker build` flags, e.g. "--network host" where the engine has no bridge
#   SKIP_BUILD=1        use IMAGE as it is
# Equality is expected when the image and PYTHON run the same torch build (the script prints both).
set -euo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: $0   (env: BASE_IMAGE IMAGE PYTHON DOCKER DOCKER_BUILD_FLAGS SKIP_BUILD; see its header)" >&2; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac
[ $# -eq 0 ] || { usage; exit 2; }
die() { echo "docker_smoke: error: $*" >&2; exit 2; }

IMAGE=${IMAGE:-fcn-sweep:smoke}
PYTHON=${PYTHON:-.venv/bin/python}
DOCKER=${DOCKER:-docker}
read -r -a build_flags <<<"${DOCKER_BUILD_FLAGS:-}"
EXPERIMENT=(--epochs=1 --hidden=64 --subset=1024 --batch_size=64 --seed=7 --optimizer=adam --dropout=0.1)

command -v "$DOCKER" >/dev/null || die "docker client '$DOCKER' not found"
"$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers to '$DOCKER'; start one (dockerd) first"
"$PYTHON" -c "import fcn_sweep" 2>/dev/null || die "$PYTHON cannot import fcn_sweep; run scripts/setup.sh or set PYTHON"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    base_arg=()
    [ -z "${BASE_IMAGE:-}" ] || base_arg=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    echo "== build $IMAGE (base: ${BASE_IMAGE:-default of the Dockerfile})" >&2
    t0=$SECONDS
    DOCKER=$DOCKER scripts/docker_build.sh -t "$IMAGE" "${base_arg[@]}" "${build_flags[@]}" >"$tmp/build.log" 2>&1 ||
        { tail -30 "$tmp/build.log" >&2; die "docker build failed (its last lines above)"; }
    size=$("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE")
    echo "built $IMAGE in $((SECONDS - t0)) s, $((size / 1000000)) MB" >&2
fi

echo "== bare run on this machine (CPU): ${EXPERIMENT[*]}" >&2
"$PYTHON" -m fcn_sweep train "${EXPERIMENT[@]}" --device=cpu --quiet --out "$tmp/bare" >/dev/null
bare=$(find "$tmp/bare" -mindepth 1 -maxdepth 1 -type d)

echo "== the same run in the container: train --from /exp --device=cpu, --network none" >&2
mkdir -m 0777 "$tmp/docker"  # the image's non-root user writes here
user=()
[ "$(id -u)" -eq 0 ] || user=(--user "$(id -u):$(id -g)")  # files stay the caller's to delete
"$DOCKER" run --rm --network none "${user[@]}" -v "$bare:/exp:ro" -v "$tmp/docker:/work/runs" \
    "$IMAGE" train --from /exp --device=cpu --quiet >/dev/null

echo "== compare" >&2
"$PYTHON" - "$bare" "$tmp/docker" "$(id -u)" <<'EOF'
import json
import sys
from pathlib import Path

bare, out, caller_uid = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
runs = [p for p in out.iterdir() if p.is_dir()]
if len(runs) != 1:
    sys.exit(f"docker_smoke: FAIL: expected one run directory in the volume, found {len(runs)}")
run = runs[0]
for name in ("config.json", "metrics.jsonl", "summary.json", "model.safetensors"):
    if not (run / name).is_file():
        sys.exit(f"docker_smoke: FAIL: the container's run directory lacks {name}")
if caller_uid == 0 and (run / "summary.json").stat().st_uid == 0:
    sys.exit("docker_smoke: FAIL: the container wrote its files as root; the image must run as a non-root user")


def metrics(d):
    lines = (d / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


summary = {d: json.loads((d / "summary.json").read_text()) for d in (bare, run)}
print(f"torch: bare {summary[bare]['torch']}, container {summary[run]['torch']}; "
      f"device: bare {summary[bare]['device']}, container {summary[run]['device']}", file=sys.stderr)
if json.loads((bare / "config.json").read_text()) != json.loads((run / "config.json").read_text()):
    sys.exit("docker_smoke: FAIL: the container ran another config than the bare run")
a, b = metrics(bare), metrics(run)
if summary[run]["status"] != "finished" or not b:
    sys.exit(f"docker_smoke: FAIL: the container's run ended {summary[run]['status']!r} after {len(b)} epochs")
if a != b:
    for x, y in zip(a, b):
        diff = {k: (x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)}
        if diff:
            sys.exit(f"docker_smoke: FAIL: metrics differ at epoch {x.get('epoch')}: (bare, container) {diff}")
    sys.exit(f"docker_smoke: FAIL: {len(a)} epochs bare, {len(b)} in the container")
print(f"docker_smoke: OK: {len(b)} epoch(s), metrics equal (time/* aside): {json.dumps(b[-1])}")
EOF
