"""`fcn-sweep sweep FILE` creates or resumes a sweep and runs its workers on this machine;
`fcn-sweep worker STORE` runs workers for a sweep that exists, on any machine that reaches the store.

The store is the sweep directory's own SQLite file `sweep.db` unless `--store URL` names another
(PostgreSQL, for workers on many machines). A sweep directory (`--out`) holds `sweep.yaml` (the
file as given) and `runs/<id>/` (one run directory per attempt, each with its offline W&B run);
with a shared store each worker host writes its own run directories under its own `--out`, and
the store records host and path for each. Running the same command again, or `--resume DIR`,
continues where it stopped: runs whose heartbeat went silent are re-queued as crashed,
interrupted runs were already re-queued by their worker, finished runs stay finished. Resuming
with options other than the stored ones is refused, naming the difference.

The parent process is the display and restarts workers that die; the workers are separate
processes (spawned, not forked: torch and database connections do not survive a fork well) that
claim, train and record, and between them propose and reap (see worker). Each worker gets an equal
share of the CPU threads, or one GPU each when `--gpus` is given.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_exit
from pathlib import Path

import yaml

from . import worker as worker_mod
from .controller import Controller
from .display import Display
from .spec import SweepFileError, load_sweep
from .store import FILE, Store, StoreError, StoreUnavailable, redact

TICK_S = 0.5
MAX_WORKER_FAILURES = 3  # a worker that dies this often in a row has a cause a restart won't fix


@dataclass(frozen=True)
class SweepOptions:
    workers: int = 1  # 0: only create (or resume) the sweep, for workers started elsewhere
    gpus: tuple[int, ...] = ()
    count: int | None = None
    order: str | None = None  # file | random; None: as stored (a new sweep: file)
    repeats: int | None = None  # None: as stored (a new sweep: 1)
    seed: int | None = None  # None: as stored (a new sweep: 0)
    wandb_mode: str = "offline"
    progress: bool = True
    pack: int = 1  # runs of one shape a worker trains at once
    threads: int | None = None  # torch threads per worker; None: this machine's cores shared among the workers
    store: str | None = None  # a store URL; None: the sweep directory's sweep.db
    name: str | None = None  # the sweep's name in the store; None: the file's `name`, or its stem
    per_worker: int | None = None  # runs each worker process claims before it leaves (`worker --count`)


def sweep_name(sweep_file: str | Path, sweep: dict, name: str | None = None) -> str:
    """The sweep's name: `--name`, else the file's `name`, else the file's stem."""
    return name or str(sweep.get("name") or Path(sweep_file).stem)


def default_dir(sweep_file: Path, sweep: dict, name: str | None = None) -> Path:
    """sweeps-out/<the sweep's name>: `--name NEW` chooses a new folder as well as a new sweep."""
    return Path("sweeps-out") / sweep_name(sweep_file, sweep, name)


def shared_dir(name: str, out: str | None, url: str) -> Path:
    """Where the sweep of the store at `url` keeps its files on this machine: `--out`, else
    sweeps-out/NAME, unless that folder is another store's sweep (a local sweep, with its own
    sweep.db): writing there would mix two sweeps' files and replace the other's sweep.yaml and report."""
    from .store import parse

    if out:
        return Path(out)
    directory = Path("sweeps-out") / name
    database = parse(url).database if "://" in url else url
    if (directory / FILE).is_file() and Path(database or "").resolve() != (directory / FILE).resolve():
        raise SweepFileError(
            f"{directory} is the folder of a local sweep named {name!r} (its own {FILE}), not of this store's; "
            f"give this one its own folder with --out DIR"
        )
    return directory


def check_same(store: Store, sweep: dict, source: str) -> None:
    """Refuse a sweep file that differs from the one the sweep was created from, naming what differs."""
    from .spec import differences

    diff = differences(store.info.config, sweep)
    if diff:
        more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
        raise SweepFileError(
            f"{store.shown} holds sweep {store.info.name!r} created from another file than {source}: "
            f"{'; '.join(diff[:3])}{more}; resume without the file (--resume DIR, or --store URL --sweep NAME), "
            "or start a new sweep with --name NEW"
        )


def check_options(store: Store, opts: SweepOptions) -> None:
    """Refuse to resume a sweep with options other than those it was created with."""
    info = store.info
    stored = {"repeats": info.repeats, "order": info.order, "seed": info.seed}
    given = {"repeats": opts.repeats, "order": opts.order, "seed": opts.seed}
    diff = [f"--{k} {v} (stored: {stored[k]})" for k, v in given.items() if v is not None and v != stored[k]]
    if diff:
        raise SweepFileError(
            f"sweep {info.name!r} in {store.shown} was created with other options: {', '.join(diff)}; "
            "resume without them, or start a new sweep with --name NEW (its own folder, sweeps-out/NEW)"
        )


def _open_existing(url: str, name: str | None, opts: SweepOptions, sweep: dict | None, source: str) -> Store:
    store = Store(url, name)
    try:
        if sweep is not None:
            check_same(store, sweep, source)
        check_options(store, opts)
    except (SweepFileError, StoreError):
        store.close()
        raise
    return store


def prepare(sweep_file: str | None, out: str | None, resume: str | None, opts: SweepOptions) -> tuple[Store, Path]:
    """Validate everything, then create or reopen the sweep; returns its store and the directory
    its run files go to. Raises SweepFileError or StoreError before writing anything when the
    input is bad."""
    sweep = load_sweep(sweep_file) if sweep_file else None
    if opts.store:  # a shared store: the sweep is found by name, its run files go under --out
        name = opts.name or (sweep_name(sweep_file, sweep) if sweep else None)
        if name is None:
            raise SweepFileError("give a sweep file, or --sweep NAME to resume a sweep of the store")
        directory = shared_dir(name, out, opts.store)
        store = Store(opts.store)  # reachable, and a known scheme, before anything else
        held = store.sweep_names()
        store.close()
        if name in held:
            return _open_existing(opts.store, name, opts, sweep, sweep_file or ""), directory
        if sweep is None:
            raise SweepFileError(
                f"{redact_url(opts.store)} holds no sweep named {name!r} (it holds: {', '.join(held) or 'none'})"
            )
        return _create(opts.store, name, sweep, opts, directory, sweep_file), directory
    if resume:
        directory = Path(resume)
        if not (directory / FILE).is_file():
            raise SweepFileError(f"{directory} is not a sweep directory (no {FILE}); start one with a sweep file")
        return _open_existing(str(directory / FILE), None, opts, sweep, sweep_file or ""), directory
    if sweep is None:
        raise SweepFileError("give a sweep file (e.g. sweeps/smoke.yaml) or --resume DIR")
    name = sweep_name(sweep_file, sweep, opts.name)
    directory = Path(out) if out else default_dir(Path(sweep_file), sweep, opts.name)
    if (directory / FILE).is_file():
        return _open_existing(str(directory / FILE), None, opts, sweep, sweep_file), directory
    return _create(str(directory / FILE), name, sweep, opts, directory, sweep_file), directory


def redact_url(url: str) -> str:
    from .store import parse

    return redact(parse(url))


def _create(url: str, name: str, sweep: dict, opts: SweepOptions, directory: Path, sweep_file: str) -> Store:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.yaml").write_text(yaml.safe_dump(sweep, sort_keys=False))
    store = Store(url)
    store.create_sweep(name, sweep, repeats=opts.repeats or 1, order=opts.order or "file", seed=opts.seed or 0)
    return store


def run_sweep(sweep_file: str | None, out: str | None, resume: str | None, opts: SweepOptions) -> tuple[Store, Path]:
    """Create or resume the sweep, plan it (grid), and run `opts.workers` local workers until it is
    done (none: only create it). Returns its store, open, and its directory."""
    store, directory = prepare(sweep_file, out, resume, opts)
    controller = Controller(store)
    with store.exclusive():
        controller.plan()
        store.set_closed(controller.exhausted())
    store.set_budget(opts.count)  # claims left for this invocation (None: no limit)
    worker_mod.reap(store)  # on a resume: whatever was running when the last process died, and is silent
    if opts.workers:
        url = opts.store or str(directory / FILE)
        code = run_workers(url, store.info.name, directory, opts)
        if code:
            store.close()
            raise StoreUnavailable(f"the store {store.shown} was away past its retry window; resume the sweep later")
    return store, directory


def asked_for(controller: Controller, opts: SweepOptions) -> int | None:
    """The runs the progress counts to: `--count`, else every run the sweep will have (None: unbounded)."""
    if opts.count is not None:
        return opts.count
    cap = controller.cap()
    return None if cap is None else cap * controller.repeats


def swept(sweep: dict) -> list[str]:
    """The parameters the sweep varies (not the fixed `value:` ones)."""
    return [k for k, spec in sweep.get("parameters", {}).items() if "value" not in spec]


def run_workers(url: str, sweep: str, out: Path, opts: SweepOptions) -> int:
    """Run `opts.workers` worker processes on this machine until the sweep is done, with a live
    display; restart one that dies (up to MAX_WORKER_FAILURES in a row). Records the invocation.
    Returns 0, or worker.EXIT_STORE when the store stayed away past its retry window (the workers
    said so, one line each; none is restarted against a store that is away)."""
    store = Store(url, sweep, create=False, wait=True)
    began = store.now()
    interrupted = threading.Event()
    # The workers end their runs as the signal says (worker.Interrupt): Ctrl-C as interrupted, a
    # scheduler's TERM or USR1 (SLURM) as preempted; the first signal is the one passed on.
    forward: list[int] = []

    def on_signal(signum: int, frame) -> None:
        forward.append(signum)
        interrupted.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    ctx = mp.get_context("spawn")
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.workers)
    devices = [f"cuda:{g}" for g in opts.gpus] or ["cpu"] * opts.workers
    specs = [
        worker_mod.WorkerSpec(
            f"w{i}", url, sweep, str(out), dev, threads, opts.wandb_mode, sweep, opts.pack, opts.per_worker
        )
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
        store, [s.name for s in specs], enabled=opts.progress, total=asked_for(Controller(store), opts),
        per_invocation=opts.count is not None, swept=swept(store.info.config),
    )  # fmt: skip
    store_away = False  # a worker, or this process, found the store away past its window
    try:
        while procs:
            # Wake on a tick, or at once when a worker exits: the sweep ends as soon as its last does.
            wait_for_exit([p.sentinel for p in procs.values()], timeout=TICK_S)
            if interrupted.is_set():
                for p in procs.values():  # workers got SIGINT from the terminal too; make sure
                    if p.is_alive() and p.pid:
                        os.kill(p.pid, forward[0])
            for name, p in list(procs.items()):
                if not p.is_alive():
                    del procs[name]
                    store_away |= p.exitcode == worker_mod.EXIT_STORE
                    if store_away:
                        continue  # the store is away: no restart, and nothing to reap now
                    try:
                        worker_mod.reap(store)
                        done = worker_mod.sweep_done(store)
                    except StoreUnavailable:
                        store_away = True
                        continue
                    failures[name] = failures.get(name, 0) + 1 if p.exitcode else 0
                    if failures[name] > MAX_WORKER_FAILURES:
                        print(
                            f"fcn-sweep: worker {name} died {failures[name]} times in a row "
                            f"(exit code {p.exitcode}); not restarting it",
                            file=sys.stderr,
                        )
                    # Replace a lost worker, and restart one that left while a lost run was re-queued
                    # (not one that left because it had run its --count).
                    elif not interrupted.is_set() and not done and (p.exitcode or opts.per_worker is None):
                        start(next(s for s in specs if s.name == name))
            try:
                with store.patience(0):  # the display skips a tick rather than wait for the store
                    display.update()
            except StoreUnavailable:
                pass
    finally:
        try:
            with store.patience(0 if store_away else store.window):
                display.close()
        except StoreUnavailable:
            pass
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # For `fcn-sweep status`'s account of where the workers' time went (not worth waiting for).
        try:
            with store.patience(0 if store_away else store.window):
                store.add_invocation(began, store.now(), len(specs), opts.pack)
        except StoreUnavailable:
            pass
        store.close()
    return worker_mod.EXIT_STORE if store_away else 0
