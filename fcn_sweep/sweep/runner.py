"""`fcn-sweep sweep FILE`: create or resume a sweep directory, start the workers, drive the controller.

A sweep directory holds `sweep.yaml` (the file as given), `sweep.db` (the store) and `runs/<id>/`
(one run directory per attempt, each with its offline W&B run). Running the same command again, or
`--resume DIR`, continues where it stopped: runs whose heartbeat went silent are re-queued as
crashed, interrupted runs were already re-queued by their worker, finished runs stay finished.

The parent process is the controller and the display; the workers are separate processes (spawned,
not forked: torch and SQLite connections do not survive a fork well). Each worker gets an equal
share of the CPU threads, or one GPU each when `--gpus` is given.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_exit
from pathlib import Path

import yaml

from ..config import RunConfig
from ..tracking import new_run_id
from . import worker as worker_mod
from .controller import Controller
from .display import Display
from .spec import SweepFileError, load_sweep
from .store import Store

TICK_S = 0.5
STALE_S = 15.0  # a running run whose heartbeat is older than this has lost its worker
MAX_WORKER_FAILURES = 3  # a worker that dies this often in a row has a cause a restart won't fix


@dataclass(frozen=True)
class SweepOptions:
    workers: int = 1
    gpus: tuple[int, ...] = ()
    count: int | None = None
    order: str = "file"  # file | random
    repeats: int = 1
    seed: int = 0
    wandb_mode: str = "offline"
    progress: bool = True
    pack: int = 1  # runs of one shape a worker trains at once


def default_dir(sweep_file: Path, sweep: dict) -> Path:
    return Path("sweeps-out") / str(sweep.get("name") or sweep_file.stem)


def _stored_sweep(directory: Path) -> dict:
    """The sweep config as the store holds it (sweep.yaml beside it is a copy for people)."""
    store = Store.in_dir(directory)
    try:
        return store.get("sweep")
    finally:
        store.close()


def prepare(sweep_file: str | None, out: str | None, resume: str | None, opts: SweepOptions) -> tuple[Path, dict]:
    """Validate everything, then create or reopen the sweep directory. Raises SweepFileError
    before writing anything when the input is bad."""
    if resume:
        directory = Path(resume)
        if not (directory / Store.FILE).is_file():
            raise SweepFileError(f"{directory} is not a sweep directory (no {Store.FILE}); start one with a sweep file")
        sweep = _stored_sweep(directory)
        if sweep_file and load_sweep(sweep_file) != sweep:
            raise SweepFileError(f"{directory} holds a different sweep than {sweep_file}")
        return directory, sweep
    if not sweep_file:
        raise SweepFileError("give a sweep file (e.g. sweeps/smoke.yaml) or --resume DIR")
    sweep = load_sweep(sweep_file)
    directory = Path(out) if out else default_dir(Path(sweep_file), sweep)
    if (directory / Store.FILE).is_file():
        if _stored_sweep(directory) != sweep:
            raise SweepFileError(f"{directory} already holds a different sweep; pass --out NEW_DIR or --resume it")
        return directory, sweep
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    store = Store.in_dir(directory)
    store.set("sweep", sweep)
    store.set("options", {"order": opts.order, "repeats": opts.repeats, "seed": opts.seed})
    store.close()
    return directory, sweep


def _gone(worker: str) -> bool:
    """Whether a worker tag `name:pid@host` names a process of this host that no longer exists."""
    _, _, where = worker.partition(":")
    pid, _, host = where.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, under another user
        pass
    return False


def reap(store: Store) -> list[str]:
    """Re-queue running attempts whose worker is gone: a process of this host that no longer
    exists, or any worker silent for STALE_S (another host, or a hung process)."""
    now = time.time()
    lost = [r.id for r in store.runs(["running"]) if _gone(r.worker or "") or (r.heartbeat or 0) < now - STALE_S]
    if lost:
        store.requeue(lost, [new_run_id() for _ in lost], "crashed", "lost")
    return lost


def asked_for(controller: Controller, opts: SweepOptions) -> int | None:
    """The runs the progress counts to: `--count`, else every run the sweep will have (None: unbounded)."""
    if opts.count is not None:
        return opts.count
    cap = controller.cap()
    return None if cap is None else cap * controller.repeats


def swept(sweep: dict) -> list[str]:
    """The parameters the sweep varies (not the fixed `value:` ones)."""
    return [k for k, spec in sweep.get("parameters", {}).items() if "value" not in spec]


def run_sweep(sweep_file: str | None, out: str | None, resume: str | None, opts: SweepOptions) -> Path:
    began = time.time()
    directory, sweep = prepare(sweep_file, out, resume, opts)
    store = Store.in_dir(directory)
    stored = store.get("options")
    controller = Controller(
        store, sweep, RunConfig(), repeats=stored["repeats"], order=stored["order"], seed=stored["seed"]
    )
    controller.plan()
    store.set("budget", opts.count)  # claims left for this invocation (None: no limit)
    store.set("closed", controller.exhausted())
    reap(store)  # on a resume: whatever was running when the last process died, and is silent

    interrupted = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: interrupted.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // opts.workers)
    devices = [f"cuda:{g}" for g in opts.gpus] or ["cpu"] * opts.workers
    specs = [
        worker_mod.WorkerSpec(f"w{i}", str(directory), dev, threads, opts.wandb_mode, str(directory.name), opts.pack)
        for i, dev in enumerate(devices)
    ]
    procs: dict[str, mp.Process] = {}

    def start(spec: worker_mod.WorkerSpec) -> None:
        p = ctx.Process(target=worker_mod.main, args=(spec,), name=spec.name, daemon=False)
        p.start()
        procs[spec.name] = p

    for spec in specs:
        start(spec)
    failures: dict[str, int] = {}
    display = Display(
        store, [s.name for s in specs], enabled=opts.progress, total=asked_for(controller, opts),
        per_invocation=opts.count is not None, swept=swept(sweep),
    )  # fmt: skip
    try:
        while procs:
            # Wake on a tick, or at once when a worker exits: the sweep ends as soon as its last does.
            wait_for_exit([p.sentinel for p in procs.values()], timeout=TICK_S)
            if interrupted.is_set():
                for p in procs.values():  # workers got SIGINT from the terminal too; make sure
                    if p.is_alive() and p.pid:
                        os.kill(p.pid, signal.SIGTERM)
            else:
                # Enough pending proposals to fill every worker's pack (random/bayes propose on demand).
                controller.top_up(want_pending=len(specs) * opts.pack)
                store.set("closed", controller.exhausted())
            for name, p in list(procs.items()):
                if not p.is_alive():
                    del procs[name]
                    reap(store)
                    failures[name] = failures.get(name, 0) + 1 if p.exitcode else 0
                    if failures[name] > MAX_WORKER_FAILURES:
                        print(
                            f"fcn-sweep sweep: worker {name} died {failures[name]} times in a row "
                            f"(exit code {p.exitcode}); not restarting it",
                            file=sys.stderr,
                        )
                    # Replace a lost worker, and restart one that left while a lost run was re-queued.
                    elif not interrupted.is_set() and store.counts()["pending"] and not store.budget_spent():
                        start(next(s for s in specs if s.name == name))
            display.update()
    finally:
        display.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # For `fcn-sweep status`'s account of where the workers' time went.
        invocation = {"started": began, "ended": time.time(), "workers": len(specs), "pack": opts.pack}
        store.set("invocations", [*(store.get("invocations") or []), invocation])
    store.close()
    return directory
