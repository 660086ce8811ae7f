"""SLURM job arrays: `fcn-sweep slurm workers` (offline, against a store) and `fcn-sweep slurm agents`
(W&B's server-driven sweeps: `fcn-sweep wandb-agent` on each GPU, packed or plain).

Each command writes a plain sbatch script and submits it with `sbatch`. A generated script rather
than a library such as submitit: submitit pickles a Python function into the job, so what runs on
the node is opaque, needs submitit there, and cannot be read, edited or resubmitted by hand; a
script with `#SBATCH` lines is what every cluster's documentation and support staff speak, and it
keeps working without this package's help (`sbatch workers-....sbatch` again after an edit).

The scripts name everything by absolute path (the interpreter, the store, the log folder), take
their threads and GPUs from SLURM's variables at run time, and never hold a secret: the W&B API
key reaches an agent through the environment sbatch exports or the ~/.netrc of `wandb login`; the
password of a store URL reaches the workers as PGPASSWORD in the environment of the sbatch that
submits them (`job_environment`), never through a file.

A task that cannot work the sweep (its store refuses it) cannot say so in the store; it says so in
its log, and `fcn-sweep status` reads the logs of the arrays the store records (`launch_trouble`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SIGNAL_S = 120  # warning before a time limit or preemption: a worker needs seconds, W&B's upload more
STAGGER_S = 2  # between agents starting, so a burst of agents does not reach W&B's server at one instant
STAGGER_SLOTS = 30  # agent k waits (k mod this) x STAGGER_S: the burst is spread over at most a minute
# sbatch's --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; or no limit at all.
TIME = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|unlimited|infinite", re.IGNORECASE)


class LaunchError(ValueError):
    """Input or a cluster that cannot take the job; one line, nothing written or submitted."""


@dataclass(frozen=True)
class Sbatch:
    """The `#SBATCH` options both kinds of array share."""

    array: int
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    time: str | None = None
    partition: str | None = None
    extra: tuple[str, ...] = ()  # --sbatch-arg values, as given
    signal_s: int = SIGNAL_S

    def lines(self, name: str, logs: Path, signal: str) -> str:
        opts = [
            f"--job-name={name}",
            f"--array=0-{self.array - 1}",
            f"--cpus-per-task={self.cpus_per_task}",
            *([f"--gpus-per-task={self.gpus_per_task}"] if self.gpus_per_task else []),
            *([f"--time={self.time}"] if self.time else []),
            *([f"--partition={self.partition}"] if self.partition else []),
            f"--output={logs}/%A_%a.out",
            f"--signal=B:{signal}@{self.signal_s}",
            "--requeue",
            "--open-mode=append",
            *self.extra,
        ]
        return "\n".join(f"#SBATCH {o}" for o in opts)


@dataclass(frozen=True)
class WorkersJob:
    store: str  # a PostgreSQL URL or a sweep directory, as the worker takes it
    sweep: str | None
    out: Path  # run directories, and this job's script and logs under out/slurm
    pack: int | str = 1  # or "auto": each task's worker chooses for its own device
    python: str = sys.executable


@dataclass(frozen=True)
class AgentsJob:
    sweep_id: str  # ENTITY/PROJECT/SWEEP_ID
    out: Path  # run directories (FCN_SWEEP_OUT), and this job's script and logs under out/slurm
    per_gpu: int = 1  # plain agents per GPU (pack 1 only)
    count: int | None = None
    stagger_s: int = STAGGER_S
    pack: int | str = 1  # > 1 or "auto": one packed agent per GPU (`fcn-sweep wandb-agent --pack K`)
    python: str = sys.executable


def q(value: object) -> str:
    return shlex.quote(str(value))


def check_args(sb: Sbatch) -> None:
    for name in ("array", "cpus_per_task"):
        if getattr(sb, name) < 1:
            raise LaunchError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(sb, name)}")
    if sb.gpus_per_task < 0:
        raise LaunchError(f"--gpus-per-task must be 0 or more, got {sb.gpus_per_task}")
    if sb.time is not None and not TIME.fullmatch(sb.time):
        raise LaunchError(
            f"--time {sb.time!r} is not a SLURM time limit; give minutes (90), MM:SS, HH:MM:SS (4:00:00), "
            "D-HH, D-HH:MM or D-HH:MM:SS (1-12:00:00)"
        )
    for arg in sb.extra:
        if not arg.startswith("-") or "\n" in arg:
            raise LaunchError(f"--sbatch-arg {arg!r} is not one sbatch option; write it as --sbatch-arg=--mem=8G")


def sbatch_path() -> str:
    path = shutil.which("sbatch")
    if path is None:
        raise LaunchError("sbatch is not on PATH; run this on a SLURM login node (or scripts/slurm_local.sh here)")
    return path


def render_workers(job: WorkersJob, sb: Sbatch, logs: Path) -> str:
    sweep = f" --sweep {q(job.sweep)}" if job.sweep else ""
    if sb.gpus_per_task:
        devices = """\
# One worker process per GPU SLURM gave this task; inside the task CUDA numbers them from 0.
n_gpus=$(tr ',' '\\n' <<<"${CUDA_VISIBLE_DEVICES:?SLURM gave this task no GPU}" | wc -l)
devices=(--gpus "$(seq -s, 0 $((n_gpus - 1)))")"""
    else:
        devices = """\
# One worker process on the CPUs SLURM gave this task.
devices=(--workers 1)"""
    return f"""\
#!/usr/bin/env bash
# fcn-sweep workers as a SLURM job array: {sb.array} task(s), each running `fcn-sweep worker`, which
# claims runs of the sweep from the store, trains them and records them until the sweep has none left.
# Written by `fcn-sweep slurm workers`; edit it and submit it again by hand with `sbatch THIS_FILE`.
#
# Preemption and time limits lose nothing. SLURM signals this script (USR1) {sb.signal_s} s before it
# kills the task; the worker ends its runs in flight as `preempted` (each gets a fresh pending attempt
# in the store) and exits within seconds, and the task requeues itself to continue later. `scancel`
# sends TERM to the worker, with the same outcome for its runs; the task then ends. A node that dies
# without a signal leaves its runs' heartbeats silent, and the next worker to look re-queues them.
{sb.lines(f"fcn-sweep-{job.sweep or 'workers'}", logs, "USR1")}
set -uo pipefail

fcn_sweep=({q(job.python)} -m fcn_sweep)
store={q(job.store)}
# Threads and GPUs come from what SLURM allocated, not from the node's size.
threads=${{SLURM_CPUS_PER_TASK:-1}}
export OMP_NUM_THREADS=$threads
{devices}

echo "task ${{SLURM_ARRAY_TASK_ID:-?}} of job ${{SLURM_ARRAY_JOB_ID:-?}} on $(hostname): $threads thread(s), \\
GPUs ${{CUDA_VISIBLE_DEVICES:-none}}, restart ${{SLURM_RESTART_COUNT:-0}}"
"${{fcn_sweep[@]}}" worker "$store"{sweep} --threads "$threads" "${{devices[@]}}" --pack {job.pack} \\
    --out {q(job.out)} --quiet &
worker=$!

requeue=0
trap 'requeue=1; kill -USR1 "$worker" 2>/dev/null' USR1
trap 'kill -TERM "$worker" 2>/dev/null' TERM

# `wait` returns early whenever a trapped signal arrives: wait again until the worker has exited.
while :; do
    if wait "$worker"; then status=0; else status=$?; fi
    kill -0 "$worker" 2>/dev/null || break
done
if [ "$requeue" = 1 ] && [ -n "${{SLURM_ARRAY_JOB_ID:-}}" ]; then
    echo "preempted: requeueing task ${{SLURM_ARRAY_TASK_ID}}"
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
fi
exit "$status"
"""


def render_agents(job: AgentsJob, sb: Sbatch, logs: Path) -> str:
    count = f" --count {job.count}" if job.count else ""
    if job.pack != 1:  # one process per GPU holding K runs; its share of the task's CPUs
        holds = "as many runs as fit its device" if job.pack == "auto" else f"{job.pack} runs"
        what = f"""one packed agent, `fcn-sweep wandb-agent --pack {job.pack}`, on each of its GPUs (on its
# CPUs when it has none): a process that holds {holds} and trains those of one shape together."""
        stop = "# The packed agent ends every run it holds within a batch as `stopped`, its best model kept."
        threads = '\nthreads=$((${SLURM_CPUS_PER_TASK:-1} / ${#gpus[@]})); [ "$threads" -ge 1 ] || threads=1'
        agent_args = f' --pack {job.pack} --threads "$threads"{count}'
    else:
        what = f"""{job.per_gpu} `fcn-sweep wandb-agent` (W&B's own `wandb agent`, one run at a time) on each
# of its GPUs (on its CPUs when it has none)."""
        stop = """# Each agent (`wandb agent --forward-signals`) passes TERM to its run, which W&B starts in a process
# group of its own, and waits for it: the run ends within a batch as `stopped`, its best model kept."""
        threads, agent_args = "", count
    return f"""\
#!/usr/bin/env bash
# W&B agents as a SLURM job array for the sweep {job.sweep_id}: {sb.array} task(s), each running
# {what}
# W&B's server hands out the runs.
# Written by `fcn-sweep slurm agents`; edit it and submit it again by hand with `sbatch THIS_FILE`.
#
# A time limit or preemption ({sb.signal_s} s ahead) signals this script, which passes TERM to each
# agent's process group; scancel signals every process of the task.
{stop}
# The task ends once every agent has exited.
# The API key never appears here: agents read WANDB_API_KEY from the environment sbatch passes on
# from the submitting shell, or the ~/.netrc that `wandb login` writes.
# Agents start {job.stagger_s} s apart (agent k of the array waits (k mod {STAGGER_SLOTS}) x {job.stagger_s} s), so a
# whole array starting at once does not reach the server in one instant (wandb/wandb#8023).
{sb.lines(f"wandb-agents-{job.sweep_id.rsplit('/', 1)[-1]}", logs, "TERM")}
set -uo pipefail

fcn_sweep=({q(job.python)} -m fcn_sweep)
sweep_id={q(job.sweep_id)}
per_gpu={job.per_gpu}
stagger={job.stagger_s}
logs={q(logs)}
export FCN_SWEEP_OUT={q(job.out)}
if [ -z "${{WANDB_API_KEY:-}}" ] && ! grep -qs api.wandb.ai ~/.netrc; then
    echo "warning: no WANDB_API_KEY in the environment and no ~/.netrc entry; agents will not reach W&B" >&2
fi

task=${{SLURM_ARRAY_TASK_ID:-0}}
IFS=, read -r -a gpus <<<"${{CUDA_VISIBLE_DEVICES:-cpu}}"{threads}
pids=()
stop_all() {{
    # Each agent leads its own process group (setsid): TERM reaches it (or its delayed start).
    local pid  # not the waiting loop's: this runs in the middle of it
    for pid in "${{pids[@]}}"; do kill -TERM -- "-$pid" 2>/dev/null; done
}}
trap stop_all TERM INT

k=$((task * ${{#gpus[@]}} * per_gpu))
for gpu in "${{gpus[@]}}"; do
    for ((m = 1; m <= per_gpu; m++)); do
        visible=$gpu; [ "$gpu" != cpu ] || visible=""
        delay=$(((k % {STAGGER_SLOTS}) * stagger))
        log="$logs/${{SLURM_ARRAY_JOB_ID:-local}}_$task-agent-$gpu-$m.log"
        # shellcheck disable=SC2016  # $1 and $@ are the inner shell's: the delay, then the agent command
        CUDA_VISIBLE_DEVICES=$visible setsid bash -c 'sleep "$1"; shift; exec "$@"' _ "$delay" \\
            "${{fcn_sweep[@]}}" wandb-agent{agent_args} "$sweep_id" >"$log" 2>&1 &
        pids+=("$!")
        echo "agent $gpu/$m: in $delay s, pid $! -> $log"
        k=$((k + 1))
    done
done
# `wait` returns early whenever a trapped signal arrives: wait again until every agent has exited.
for agent in "${{pids[@]}}"; do
    while kill -0 "$agent" 2>/dev/null; do wait "$agent"; done
done
"""


def write_script(text: str, directory: Path, kind: str) -> Path:
    """A new file each time (kind-YYYYmmdd-HHMMSS.sbatch), so a script a user edited is never replaced."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = directory / f"{kind}-{stamp}.sbatch"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"{kind}-{stamp}-{n}.sbatch"
    path.write_text(text)
    path.chmod(0o755)
    return path


def job_environment(password: str | None, extra: tuple[str, ...]) -> dict[str, str] | None:
    """The environment sbatch runs in, which SLURM gives the job's tasks (its default --export=ALL):
    with the store URL's password as PGPASSWORD, so that the tasks have it and no file does. None:
    this process's own."""
    if password is None:
        return None
    if any(arg.startswith("--export") for arg in extra):
        raise LaunchError(
            "the store URL's password reaches the tasks only through the job's environment, which "
            "--sbatch-arg=--export... narrows; drop that option, or give the password by ~/.pgpass on the nodes"
        )
    return {**os.environ, "PGPASSWORD": password}


def _said(done: subprocess.CompletedProcess) -> str:
    """sbatch's complaint in one line: its error lines, without the `sbatch: error:` prefixes."""
    lines = [x.strip() for x in (done.stderr or done.stdout).splitlines() if x.strip() and not x.startswith("Try ")]
    return "; ".join(re.sub(r"^sbatch: (error: )?", "", x) for x in lines) or f"exit code {done.returncode}"


def check_with_sbatch(text: str, env: dict[str, str] | None = None) -> None:
    """Every option of the script as sbatch and the controller judge it (an unknown option, a
    partition that does not exist, a time beyond the partition's limit, GPUs the cluster lacks),
    with nothing written or submitted: `sbatch --test-only` reads the script from stdin."""
    try:
        done = subprocess.run(
            [sbatch_path(), "--test-only"], input=text, capture_output=True, text=True, env=env, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise LaunchError("sbatch --test-only had no answer in 60 s; is the cluster's controller up?") from None
    if done.returncode != 0:
        raise LaunchError(f"sbatch refuses the job: {_said(done)}; nothing was written or submitted")


def submit(script: Path, env: dict[str, str] | None = None) -> str:
    """The job id sbatch assigns."""
    done = subprocess.run([sbatch_path(), "--parsable", str(script)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise LaunchError(f"sbatch refused the job: {_said(done)}")
    return done.stdout.strip().split(";")[0]


def partition_cpus(partition: str | None) -> int | None:
    """The CPUs of the partition (or the cluster), for how many CPU tasks fit at once; None where
    sinfo cannot say (no cluster here: a dry run on a laptop)."""
    cmd = ["sinfo", "-h", "-o", "%C", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split()
        totals = [int(line.split("/")[3]) for line in out]  # allocated/idle/other/total, a line per partition
        # Without --partition, partitions may share nodes: the largest one, not their sum.
        return max(totals, default=0) or None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


# --- can the nodes reach the store? ---------------------------------------------------------------
def node_hosts(partition: str | None) -> list[str]:
    """Host names of the nodes the job may run on."""
    cmd = ["sinfo", "-h", "-N", "-o", "%n", *(["-p", partition] if partition else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"cannot list the cluster's nodes with sinfo: {e}") from None
    hosts = sorted(set(done.stdout.split()))
    if done.returncode != 0 or not hosts:
        where = f"partition {partition}" if partition else "the cluster"
        raise LaunchError(f"sinfo lists no nodes in {where}: {done.stderr.strip() or 'check --partition'}")
    return hosts


def _is_this_host(host: str) -> bool:
    names = {socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn(), "localhost"}
    return host in names or host.split(".")[0] in names


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_reachable(store: str, partition: str | None) -> None:
    """Fail before submitting when the nodes cannot reach the store: a sweep directory (SQLite,
    one machine's file locks) or a PostgreSQL on this machine's loopback or Unix socket, with nodes
    other than this one; or a PostgreSQL server that does not answer from here either."""
    hosts = node_hosts(partition)
    elsewhere = [h for h in hosts if not _is_this_host(h)]
    if "://" not in store or store.startswith("sqlite"):
        if elsewhere:
            raise LaunchError(
                f"{store} is a SQLite store, which only this machine can share safely, but the job may run "
                f"on {', '.join(elsewhere[:3])}; use a PostgreSQL store (postgresql://HOST/DB) that the nodes reach"
            )
        return
    url = urlsplit(store)
    if not url.scheme.startswith("postgres"):
        raise LaunchError(f"store {store!r}: expected postgresql://USER@HOST:PORT/DB or a sweep directory")
    socket_dir = parse_qs(url.query).get("host", [""])[0]
    host = url.hostname or ""
    if not host or socket_dir.startswith("/") or _loopback(host):
        if elsewhere:
            raise LaunchError(
                f"store {store} is on this machine's {'loopback' if host else 'Unix socket'}, which the nodes "
                f"({', '.join(elsewhere[:3])}) cannot reach; give the server's host name (and listen_addresses) instead"
            )
        if not host or socket_dir.startswith("/"):
            return
    try:
        socket.create_connection((host, url.port or 5432), timeout=5).close()
    except OSError as e:
        raise LaunchError(f"store {store}: no PostgreSQL answers at {host}:{url.port or 5432} ({e})") from None


# --- tasks that could not work the sweep ----------------------------------------------------------
# What a worker prints when it cannot start (a usage error: the store refused it) or gives up (the
# store away past its window): the lines status repeats from the task logs.
TROUBLE = ("fcn-sweep worker: error:", "exiting with code")


def launch_trouble(launches: list[dict]) -> list[str]:
    """For each recorded array whose log folder this host can read, one line when tasks said they
    could not work the sweep: how many, and the first thing one said."""
    out = []
    for launch in launches:
        found = []
        for log in sorted(Path(launch["logs"]).glob(f"{launch['job']}_*.out")):
            lines = [x for x in log.read_text(errors="replace").splitlines() if any(t in x for t in TROUBLE)]
            if lines:
                found.append((log, lines[-1].strip()))
        if found:
            log, said = found[0]
            out.append(f"slurm job {launch['job']}: {len(found)} task(s) could not work the sweep: {said} ({log})")
    return out
