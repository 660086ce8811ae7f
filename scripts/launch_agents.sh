#!/usr/bin/env bash
# Start W&B agents for one sweep on every GPU, bare or in the CUDA Docker image, each logging to its
# own file. --pack K (or auto): ONE `fcn-sweep wandb-agent --pack K` per GPU, a process that holds K
# runs of the sweep and trains the runs of one shape together. --pack 1 (the default): M plain agents
# per GPU (--per-gpu; several small FCNs share a GPU well), each W&B's own `wandb agent` training one
# run at a time. Ctrl-C (or SIGTERM) stops them all: each agent gets SIGTERM; a packed agent ends
# every run it holds; a plain one, started with `wandb agent --forward-signals` (by `fcn-sweep
# wandb-agent`), passes it to the run it is training (which W&B starts in a process group of its
# own, out of reach of a signal to the agent's group) and waits for it. Either way each run ends
# within a batch as `stopped` with its best model kept, and this script exits once every agent has.
#
#   scripts/launch_agents.sh SWEEP_ID [--gpus 0,1,...] [--pack K|auto] [--per-gpu M] [--count N] [--docker IMAGE] [--logs DIR]
#
# SWEEP_ID is ENTITY/PROJECT/ID as printed by `wandb sweep sweeps/grid.yaml`. Without --gpus, every
# GPU that nvidia-smi lists is used; with none, the agents run on the CPU. --per-gpu M > 1 needs
# --pack 1 (a packed agent fills its GPU by itself: give it a larger K instead); each packed agent
# gets its share of the CPUs (--threads). --count N: runs per agent (a packed agent takes N in all).
# With --docker, --pack passes to the image's `fcn-sweep wandb-agent`, and WANDB_API_KEY,
# WANDB_ENTITY, WANDB_PROJECT and WANDB_BASE_URL (a self-hosted W&B server) pass from this shell at
# run time by name (`-e NAME`: docker reads the value from its own environment, so no key appears on
# a command line, in a log or in the image), and runs land in ./runs through a volume. The agent
# binary is $FCN_SWEEP, else the repo's .venv/bin/fcn-sweep, else fcn-sweep on PATH.
set -euo pipefail

usage() { echo "usage: $0 SWEEP_ID [--gpus 0,1,...] [--pack K|auto] [--per-gpu M] [--count N] [--docker IMAGE] [--logs DIR]" >&2; exit 2; }
die() { echo "launch_agents: $*" >&2; exit 2; }

[ $# -ge 1 ] && [[ $1 != -* ]] || usage
sweep_id=$1; shift
gpus=""; pack=1; per_gpu=1; count=""; image=""; logs="logs/agents"
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
        --gpus) gpus=$2 ;;
        --pack) pack=$2 ;;
        --per-gpu) per_gpu=$2 ;;
        --count) count=$2 ;;
        --docker) image=$2 ;;
        --logs) logs=$2 ;;
        *) usage ;;
    esac
    shift 2
done
[[ $pack =~ ^[1-9][0-9]*$ ]] || [ "$pack" = auto ] || die "--pack must be a positive integer or auto, got '$pack'"
[[ $per_gpu =~ ^[1-9][0-9]*$ ]] || die "--per-gpu must be a positive integer, got '$per_gpu'"
[ "$pack" = 1 ] || [ "$per_gpu" = 1 ] ||
    die "--per-gpu $per_gpu needs --pack 1; a packed agent holds K runs on its GPU by itself: give a larger --pack instead"
[ -z "$count" ] || [[ $count =~ ^[1-9][0-9]*$ ]] || die "--count must be a positive integer, got '$count'"
[ -z "$gpus" ] || [[ $gpus =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,2, got '$gpus'"
if [ -z "$gpus" ] && command -v nvidia-smi >/dev/null; then
    gpus=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, - || true)
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
agent=${FCN_SWEEP:-}
[ -n "$agent" ] || { [ -x "$repo/.venv/bin/fcn-sweep" ] && agent="$repo/.venv/bin/fcn-sweep"; } || agent=fcn-sweep
[ -n "$image" ] || command -v "$agent" >/dev/null || die "cannot find fcn-sweep; run scripts/setup.sh or set FCN_SWEEP"
mkdir -p "$logs"

pids=()
stop_all() {
    trap - INT TERM
    echo "launch_agents: stopping ${#pids[@]} agent(s)" >&2
    # Each agent leads its own process group (setsid). A packed agent ends the runs it holds; a plain
    # one forwards the signal to its run (in a group of its own) and waits for it.
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    # Until every agent has exited, which it does once its runs have ended. (A second Ctrl-C, with the
    # traps cleared, ends this script at once and leaves the agents to finish.)
    wait || true
    exit 130
}
trap stop_all INT TERM

IFS=, read -r -a slots <<<"${gpus:-cpu}"
# --pack 1 keeps the agent's plain command line, W&B's own `wandb agent` (one run per process). A
# packed agent trains on its share of this machine's CPUs.
agent_args=()
if [ "$pack" != 1 ]; then
    threads=$(($(nproc) / ${#slots[@]})); [ "$threads" -ge 1 ] || threads=1
    agent_args+=(--pack "$pack" --threads "$threads")
fi
[ -z "$count" ] || agent_args+=(--count "$count")
for gpu in "${slots[@]}"; do
    for ((m = 1; m <= per_gpu; m++)); do
        log="$logs/agent-$gpu-$m.log"
        if [ -n "$image" ]; then
            gpu_flag=(); [ "$gpu" = cpu ] || gpu_flag=(--gpus "device=$gpu")
            setsid docker run --rm --init "${gpu_flag[@]}" -e WANDB_API_KEY -e WANDB_ENTITY -e WANDB_PROJECT -e WANDB_BASE_URL \
                -v "$PWD/runs:/runs" -e FCN_SWEEP_OUT=/runs "$image" wandb-agent "${agent_args[@]}" "$sweep_id" \
                >"$log" 2>&1 &
        else
            visible=$gpu; [ "$gpu" != cpu ] || visible=""
            CUDA_VISIBLE_DEVICES=$visible setsid "$agent" wandb-agent "${agent_args[@]}" "$sweep_id" >"$log" 2>&1 &
        fi
        pids+=("$!")
        echo "agent $gpu/$m: pid $! -> $log" >&2
    done
done
wait
