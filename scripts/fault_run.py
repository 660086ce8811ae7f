#!/usr/bin/env python3
"""A randomised fault run of a shared sweep: real `fcn-sweep worker` processes on a throwaway
PostgreSQL, and rounds of faults at random moments: SIGKILL of a worker (a replacement starts),
SIGSTOP/SIGCONT of one (sometimes past the stale limit, so its run is re-queued and taken, and it
comes back late), a server restart (`pg_ctl restart -m fast`), and every client connection ended
(`pg_terminate_backend`). Then a last worker finishes the sweep, and the store is checked:

    slots done N/N, duplicates 0, finished runs changed 0

(every slot has an attempt done for good; no slot has two; no finished attempt changed after it
was first seen finished), and each finished run's epochs in the store equal its metrics.jsonl.
Exit 0 when all of that holds, 1 otherwise.

    scripts/fault_run.py [--rounds 10] [--slots 24] [--epochs 8] [--workers 3] [--seed S]

Needs PostgreSQL's server binaries (Debian: postgresql) and the FashionMNIST files; runs as root
too (the server then runs as `postgres`). Takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
# Run bare (`scripts/fault_run.py`), it needs no active venv: it runs again with the repository's
# own .venv (what scripts/setup.sh makes), where fcn-sweep and its dependencies are installed.
if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
    os.execv(VENV / "bin" / "python", [str(VENV / "bin" / "python"), __file__, *sys.argv[1:]])
sys.path.insert(0, str(REPO))

try:
    from fcn_sweep.sweep.store import Store
    from tests.pg_server import PG_BINS, Server  # the tests' throwaway server
except ModuleNotFoundError as e:
    fix = f"run scripts/setup.sh first (it makes {VENV}), or run this with a python that has it"
    print(f"{sys.argv[0]}: {e}; {fix}", file=sys.stderr)
    sys.exit(2)

SWEEP = """\
name: fault-run
method: grid
metric: {{name: val/acc, goal: maximize}}
parameters:
  epochs: {{value: {epochs}}}
  subset: {{value: 1024}}
  batch_size: {{value: 64}}
  hidden: {{values: [[64, 32], [32]]}}
  lr: {{values: {lrs}}}
"""
STALE_S = "4"  # the stale limit the workers use: a SIGSTOP longer than this loses the worker its run


class Workers:
    def __init__(self, url: str, password: str, out: Path):
        self.url, self.out, self.n = url, out, 0
        self.env = {
            **os.environ, "PGPASSWORD": password, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1",
            "FCN_SWEEP_STALE_S": STALE_S, "FCN_SWEEP_STORE_RETRY_S": "120", "PYTHONPATH": str(REPO),
        }  # fmt: skip
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> str:
        name = f"worker{self.n}"
        self.n += 1
        cmd = [sys.executable, "-m", "fcn_sweep", "worker", self.url, "--out", str(self.out), "--quiet",
               "--wandb", "disabled"]  # fmt: skip
        err = open(self.out / f"{name}.err", "w")  # noqa: SIM115  (the process holds it)
        env = {**self.env, "FCN_SWEEP_HOST": f"host-{name}"}
        # Its own process group: a fault hits the whole worker (the process that runs it and its worker
        # processes), as a node crash or a node freeze would.
        self.procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        return name

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]


def snapshot(store: Store) -> dict[str, tuple]:
    finished = store.runs(["finished"])
    histories = store.histories(r.id for r in finished)
    return {r.id: (r.status, r.stop_reason, r.epoch, json.dumps(r.summary), r.ended, json.dumps(histories[r.id]))
            for r in finished}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--slots", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    if not PG_BINS:
        print("fault_run: PostgreSQL's server binaries are not installed (Debian: postgresql)", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    server = Server("fcn-sweep-fault-run-")
    root = server.root
    out = root / "out"
    out.mkdir()
    try:
        sweep_file = root / "sweep.yaml"
        lrs = [round(0.001 * (k + 1), 4) for k in range(-(-args.slots // 2))]
        sweep_file.write_text(SWEEP.format(epochs=args.epochs, lrs=lrs))
        env = {**os.environ, "PGPASSWORD": server.password, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "fcn_sweep", "sweep", str(sweep_file), "--store", server.url, "--workers", "0",
               "--out", str(out)]  # fmt: skip
        made = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if made.returncode:
            print(made.stderr, file=sys.stderr)
            return 1
        store = Store(server.full)
        slots = store.slots()[1]
        workers = Workers(server.url, server.password, out)
        for _ in range(args.workers):
            workers.start()
        print(f"seed {args.seed}: {slots} slots, {args.workers} workers, {args.rounds} rounds", flush=True)
        deadline = time.monotonic() + 600
        while not store.runs(["running"]) and time.monotonic() < deadline:  # faults hit runs in training
            time.sleep(0.5)
        seen: dict[str, tuple] = {}
        changed: set[str] = set()
        faults = Counter()
        for k in range(args.rounds):
            time.sleep(rng.uniform(1.0, 4.0))
            fault = rng.choice(["sigkill", "sigstop", "restart", "terminate"])
            alive = workers.alive()
            # A worker that is training, when one is: a fault there costs a run, not an idle process.
            training = {r.host for r in store.runs(["running"])}
            alive = [n for n in alive if f"host-{n}" in training] or alive
            if fault in ("sigkill", "sigstop") and not alive:
                fault = "restart"
            if fault == "sigkill":
                victim = rng.choice(alive)
                os.killpg(workers.procs[victim].pid, signal.SIGKILL)
                what = f"SIGKILL {victim}, started {workers.start()}"
            elif fault == "sigstop":
                victim, pause = rng.choice(alive), rng.uniform(1.0, 9.0)
                os.killpg(workers.procs[victim].pid, signal.SIGSTOP)
                time.sleep(pause)
                os.killpg(workers.procs[victim].pid, signal.SIGCONT)
                what = f"SIGSTOP {victim} for {pause:.1f} s (stale limit {STALE_S} s)"
            elif fault == "restart":
                server.pg_ctl("-m", "fast", "restart")
                what = "pg_ctl restart -m fast"
            else:
                what = f"pg_terminate_backend of {server.terminate_connections()} connections"
            faults[fault] += 1
            now = snapshot(store)
            changed |= {i for i, v in seen.items() if now.get(i) != v}
            seen.update(now)
            done, _ = store.slots()
            print(f"round {k + 1}: {what}; {done}/{slots} slots done", flush=True)
        for name in workers.alive():  # the round's workers finish what they can
            workers.procs[name].wait(timeout=900)
        last = workers.start()
        workers.procs[last].wait(timeout=900)
        now = snapshot(store)
        changed |= {i for i, v in seen.items() if now.get(i) != v}
        done_runs = store.done_runs()
        per_slot = Counter(r.slot for r in done_runs)
        duplicates = sum(1 for n in per_slot.values() if n > 1)
        histories = store.histories(r.id for r in done_runs)
        on_disk = lambda r: [json.loads(x) for x in (Path(r.run_dir) / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
        mismatched = [r.id for r in done_runs if histories[r.id] != on_disk(r)]
        crashed = [r.id for r in store.runs(["crashed"]) if r.stop_reason == "error"]
        codes = Counter(p.returncode for p in workers.procs.values())
        taken = sum(f.read_text().count("another worker's now") for f in out.glob("worker*.err"))
        tracebacks = sum(f.read_text().count("Traceback") for f in out.glob("worker*.err"))
        counts = {k: v for k, v in store.counts().items() if v}
        store.close()
        print(f"faults: {dict(faults)}; worker exit codes: {dict(codes)}; attempts: {counts}")
        print(f"late workers' runs refused: {taken}; tracebacks: {tracebacks}; store != run dir: {len(mismatched)}; "
              f"crashed by a training error: {len(crashed)}")  # fmt: skip
        for name, p in workers.procs.items():  # a worker that gave up (not one killed) says why
            if p.returncode not in (0, -signal.SIGKILL):
                said = (out / f"{name}.err").read_text().strip().splitlines() or ["(nothing)"]
                print(f"{name} exited {p.returncode}: {said[-1]}")
        print(f"slots done {len(per_slot)}/{slots}, duplicates {duplicates}, finished runs changed {len(changed)}")
        ok = len(per_slot) == slots and not duplicates and not changed and not mismatched and not crashed
        return 0 if ok and not tracebacks else 1
    finally:
        for p in getattr(locals().get("workers"), "procs", {}).values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        server.close()


if __name__ == "__main__":
    sys.exit(main())
