#!/usr/bin/env bash
# Everything in this project that needs a GPU, in one command, for whoever has one:
#   1. the tests marked `cuda` (fused kernels with step tensors on the device, packed = solo for every
#      optimizer, determinism, the compiled update captured), 2. `fcn-sweep bench --device cuda` (packs
#      of 1, 16, 128 and 512: FLOP/s against the GPU's large-matmul rate, ops per step, configs/hour,
#      the grid's wall time), then scripts/gpu_measure.py (the memory bound against torch's peak, the
#      stacked and compiled updates against the grouped one), scripts/gpu_profile.py --time-only (a
#      captured step at packs of 128 and 512 with the two batch norms of kernels.py side by side, TF32,
#      and the compiled update) and scripts/agent_measure.py (the W&B
#      path: one packed agent against runs one at a time), 3. the dry run of sweeps/grid.yaml with
#      --pack auto on GPU 0, 4. a local sweep of sweeps/smoke.yaml on GPU 0 with --pack auto, 5. where
#      Docker runs: the image with --gpus all reproducing a bare CUDA run. Then a pass/fail table and
#      the figures. About 8-9 min on an H200 by estimate (5 min measured before the profile, agents and
#      compiled-update steps; compiling takes 10-30 s a variant), within a session's 15 min of device
#      time with the machine's start.
# Usage: scripts/gpu_check.sh [--cpu]
#   --cpu           the same steps on the CPU, smaller, to try the script on a machine without a GPU
#   --only STEPS    only these steps (comma-separated names of the table's rows), e.g. to split the check
#                   over two device calls of under 10 minutes each: --only cuda-tests,bench,measure, then
#                   --only profile,agents,grid-dry-run,sweep-smoke,docker-repro
#   PYTHON          interpreter with fcn_sweep importable (default: .venv/bin/python, else python3)
#   FCN_SWEEP_DATA  folder with the four FashionMNIST IDX .gz files (default: what fcn_sweep finds)
#   IMAGE           image for step 5 (default: fcn-sweep; built with scripts/docker_build.sh if absent)
#   DOCKER          docker client (default: docker)
#   OUT             where logs and outputs go (default: a new folder under ${TMPDIR:-/tmp})
# Exit status: 0 when no step failed (skipped steps say why), 1 otherwise, 2 on bad usage.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

usage() { echo "usage: $0 [--cpu] [--only STEP[,STEP...]]   (env: PYTHON FCN_SWEEP_DATA IMAGE DOCKER OUT; see its header)" >&2; }
STEPS=" cuda-tests bench measure profile agents grid-dry-run sweep-smoke docker-repro "
DEVICE=cuda ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) DEVICE=cpu ;;
        --only)
            [ $# -ge 2 ] || { usage; exit 2; }
            ONLY=" ${2//,/ } "
            for name in $ONLY; do
                [[ "$STEPS" == *" $name "* ]] || { echo "gpu_check: error: --only $name: no such step; the steps:$STEPS" >&2; exit 2; }
            done
            shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage; exit 2 ;;
    esac
    shift
done

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
command -v "$PYTHON" >/dev/null || { echo "gpu_check: error: PYTHON '$PYTHON' not found" >&2; exit 2; }
DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-fcn-sweep}
made_out=""
[ -n "${OUT:-}" ] || { OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX") && made_out=1; }
mkdir -p "$OUT"
export WANDB_MODE=disabled WANDB_SILENT=true PYTHONUNBUFFERED=1

# The GPU, or a clear word that there is none; nothing GPU-bound runs without one.
if ! info=$("$PYTHON" -c "
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
name = torch.cuda.get_device_name(0) if n else 'none'
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {n} GPU(s): {name}')
" 2>"$OUT/torch.err"); then
    echo "gpu_check: error: $PYTHON cannot import torch: $(tail -1 "$OUT/torch.err")" >&2
    exit 2
fi
if [ "$DEVICE" = cuda ] && [[ "$info" == *" 0 GPU(s)"* ]]; then
    [ -z "$made_out" ] || rm -rf "$OUT"
    echo "gpu_check: no CUDA device here ($info): no GPU step was run, nothing failed. On the CPU: $0 --cpu"
    exit 0
fi
echo "gpu_check: $info; python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'); logs in $OUT"

# --- steps: each one line in the table; SKIP names the missing tool ------------------------------
rows=()
failed=0
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *" $1 "* ]]; }  # wanted NAME: not left out by --only
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, record a row
    local name=$1 limit=$2 start rc
    shift 2
    if ! wanted "$name"; then
        skip "$name" "not in --only"
        return
    fi
    echo "== $name: $*"
    start=$SECONDS
    if declare -F "$1" >/dev/null; then  # a function of this script: its commands carry their own limits
        "$@" >"$OUT/$name.log" 2>&1
    else
        timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    fi
    rc=$?
    tail -3 "$OUT/$name.log" | sed 's/^/   /'
    if [ "$rc" -eq 0 ]; then
        rows+=("$(printf '%-22s PASS  %4ss' "$name" $((SECONDS - start)))")
    else
        [ "$rc" -eq 124 ] && echo "   (timed out after ${limit}s)"
        rows+=("$(printf '%-22s FAIL  %4ss  exit %s, see %s' "$name" $((SECONDS - start)) "$rc" "$OUT/$name.log")")
        failed=1
    fi
}
skip() { rows+=("$(printf '%-22s SKIP         %s' "$1" "$2")"); echo "== $1: SKIP ($2)"; }
has_module() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }

# A dry run on the CPU does less of everything; the GPU run uses the bench's own GPU defaults.
if [ "$DEVICE" = cuda ]; then
    bench_args=() gpus=(--gpus 0) dry=(--gpus 0)
else
    # The dry run as the issue timed it: two workers of one thread each (two threads per process on
    # a busy CPU wait on each other: docs/speed.md).
    bench_args=(--steps 10 --repeats 1 "--pack=1,4") gpus=(--workers 1) dry=(--workers 2)
fi

if has_module pytest; then
    step cuda-tests 300 env FCN_SWEEP_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -p no:cacheprovider \
        -m cuda tests/test_cuda.py
else
    skip cuda-tests "pytest is not installed for $PYTHON"
fi

if has_module torchvision; then
    step bench 300 "$PYTHON" -m fcn_sweep bench --device "$DEVICE" "${bench_args[@]}"
else
    skip bench "torchvision is not installed for $PYTHON (bench's tutorial loop uses it)"
fi

# What the bench does not measure: the memory bound and the updates (stacked, compiled, grouped). (TF32 beside fp32 was measured
# on 2026-12-04, +10-11%: docs/gpu.md; gpu_profile.py times it again.)
# On the CPU only the updates alone (the rest needs CUDA's memory statistics and graphs).
step measure 300 "$PYTHON" scripts/gpu_measure.py --device "$DEVICE"

# Where a captured step's GPU time goes, kernel by kernel, with batch norm's two implementations
# side by side (issue 28); on the CPU tiny packs, one thread. Its output also in $OUT/gpu_profile.txt
# and every figure in $OUT/gpu_profile.json.
if has_module torch.profiler; then
    # Timings only (about a minute by estimate): the kernel tables take 2-3 minutes more, too many for a
    # session's 15 minutes of device time beside the rest; run them alone with scripts/gpu_profile.py.
    step profile 420 "$PYTHON" scripts/gpu_profile.py --device "$DEVICE" --time-only --out "$OUT/gpu_profile.txt"
else
    skip profile "torch.profiler cannot be imported by $PYTHON"
fi

# The W&B path (issue 26): one packed agent against W&B's own agent training runs one at a time, through a
# loopback stand-in of W&B's agent API (runs log offline); on a GPU the study's network and its grid's wall time.
if missing=$("$PYTHON" -c "import wandb, sweeps" 2>&1); then
    if [ "$DEVICE" = cuda ]; then
        agent_args=(--device cuda --hidden "1024,256" --pack auto --runs 64 --alone 2 --epochs 1 --rounds 1 --grid)
    else
        agent_args=(--device cpu --hidden 64 --pack 2 --alone 1 --epochs 1 --rounds 1)
    fi
    step agents 300 "$PYTHON" scripts/agent_measure.py "${agent_args[@]}"
else
    skip agents "$(echo "$missing" | tail -1) (W&B's client and engine)"
fi

# What a local sweep imports on this branch (W&B's `sweeps` engine, the store's driver...), found by importing it.
if missing=$("$PYTHON" -c "import sweeps, fcn_sweep.sweep.runner, fcn_sweep.sweep.worker" 2>&1); then
    step grid-dry-run 300 "$PYTHON" -m fcn_sweep sweep sweeps/grid.yaml "${dry[@]}" --pack auto --dry-run
    step sweep-smoke 300 "$PYTHON" -m fcn_sweep sweep sweeps/smoke.yaml "${gpus[@]}" --pack auto \
        --wandb disabled --quiet --out "$OUT/sweep-smoke"
else
    skip grid-dry-run "$(echo "$missing" | tail -1) (the sweep planner)"
    skip sweep-smoke "$(echo "$missing" | tail -1) (the local sweep's engine and store)"
fi

# The image reproduces a bare run: same seed, same tiny config, metrics compared without timings.
# shellcheck disable=SC2329  # run through step()
docker_step() {
    local args=(--epochs=2 --hidden=128 --subset=2048 --seed=7 --wandb disabled --quiet)
    mkdir -p "$OUT/bare" "$OUT/container"
    timeout 300 "$PYTHON" -m fcn_sweep train --device "$DEVICE" --out "$OUT/bare" "${args[@]}" || return 1
    if ! "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
        DOCKER=$DOCKER timeout 1800 scripts/docker_build.sh -t "$IMAGE" || return 1
    fi
    local gpu_flag=()
    [ "$DEVICE" = cpu ] || gpu_flag=(--gpus all)
    timeout 600 "$DOCKER" run --rm "${gpu_flag[@]}" --network none --user "$(id -u):$(id -g)" \
        -v "$OUT/container:/work/runs" "$IMAGE" train --device "$DEVICE" "${args[@]}" || return 1
    "$PYTHON" - "$OUT/bare" "$OUT/container" <<'EOF'
import json, pathlib, sys

def run(parent):
    (d,) = pathlib.Path(parent).iterdir()
    rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows], json.loads(
        (d / "summary.json").read_text())["torch"]

(bare, t_bare), (box, t_box) = run(sys.argv[1]), run(sys.argv[2])
print(f"torch: bare {t_bare}, container {t_box}; metrics {'equal' if bare == box else 'DIFFER'}")
sys.exit(0 if bare == box else 1)
EOF
}
if ! wanted docker-repro; then
    skip docker-repro "not in --only"
elif command -v "$DOCKER" >/dev/null && "$DOCKER" info >/dev/null 2>&1; then
    step docker-repro 0 docker_step
else
    skip docker-repro "no Docker engine answers to '$DOCKER'"
fi

# --- the table -----------------------------------------------------------------------------------
echo
echo "gpu_check ($DEVICE): $info"
printf '%s\n' "${rows[@]}"
if [ -f "$OUT/bench.log" ]; then
    echo "bench:"
    sed 's/^/  /' "$OUT/bench.log"
fi
for extra in measure agents; do
    if [ -f "$OUT/$extra.log" ]; then
        echo "$extra:"
        sed 's/^/  /' "$OUT/$extra.log"
    fi
done
if [ -f "$OUT/profile.log" ]; then
    echo "profile (each case's kernels: $OUT/gpu_profile.txt):"
    grep -E '^(reduce batch norm|ms/step|K=|gpu_profile)' "$OUT/profile.log" | sed 's/^/  /'
fi
if [ -f "$OUT/grid-dry-run.log" ]; then
    echo "grid dry run:"
    grep -E '^(--pack|sweep )' "$OUT/grid-dry-run.log" | sed 's/^/  /'
fi
exit "$failed"
