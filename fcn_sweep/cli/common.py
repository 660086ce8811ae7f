"""What every command shares: the usage error (exit 2, one line), output checks, signals, and
opening the store a command names."""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ..config import RunConfig

EXIT_USAGE = 2
WANDB_MODES = ("auto", "online", "offline", "disabled")


class UsageError(Exception):
    """Input the user can fix; main() prints it on one line and exits with code 2."""


def check_writable(path: str | os.PathLike, flag: str) -> None:
    """An output location this process cannot write is a usage error, found before anything is
    trained or written. The nearest existing ancestor of `path` must be a directory in which a file
    can be created: tried with a temporary file, since permission bits tell nothing for root, a
    read-only mount or a container running as another uid than the mount's owner."""
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a directory; give a directory path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(
            f"{flag} {path}: cannot write in {existing} ({e.strerror}); write as its owner (in Docker: "
            f'mkdir it yourself, not Docker as root, and docker run --user "$(id -u):$(id -g)") or choose a '
            "writable directory or mount"
        ) from None


def config_from(config_file: str | None, overrides: Sequence[str], sweep: dict | None = None) -> RunConfig:
    """Defaults, then the config file, then what `wandb agent` handed over, then `--key=value`
    overrides: later wins."""
    cfg = RunConfig.from_file(config_file) if config_file else RunConfig()
    cfg = RunConfig.from_dict(sweep or {}, cfg)
    return RunConfig.from_args(overrides, cfg)


def stop_on_signals() -> threading.Event:
    """SIGTERM (what `wandb agent` sends when Hyperband stops a run or a sweep is cancelled) and
    Ctrl-C set an event that the training loop checks between batches, so the run ends within a
    batch, logs its state and keeps its best model instead of dying mid-write."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    return stop


def store_url(given: str | None) -> str | None:
    from ..sweep.store import ENV

    return given or os.environ.get(ENV) or None


def gpu_list(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(g) for g in text.split(","))
    except ValueError:
        raise UsageError(f"--gpus must look like 0,1,2, got {text!r}") from None


def open_store(args: argparse.Namespace, command: str):
    """The store a status or report names: --store URL (or FCN_SWEEP_STORE), else DIR's sweep.db.
    None when neither names one (report then reads DIR as a folder of run directories)."""
    from ..sweep.store import FILE, Store, StoreError

    url = args.store or (None if args.dir else store_url(None))
    if url is None and args.dir and os.path.isfile(os.path.join(args.dir, FILE)):
        url = os.path.join(args.dir, FILE)
    if url is None:
        return None
    try:
        store = Store(url, args.sweep, create=False)  # status and report read; they never make a store
        store.info  # noqa: B018  (a store without sweeps fails here, not later)
    except StoreError as e:
        raise UsageError(str(e)) from None
    return store


def open_sweep(store: str, name: str | None):
    """The store (a URL, a SQLite file, or a sweep directory holding one) opened on the sweep,
    and its path or URL as workers take it; a UsageError naming what is missing."""
    from ..sweep.store import FILE, Store, StoreError

    if "://" not in store:
        path = Path(store) / FILE if Path(store).is_dir() else Path(store)
        if not path.is_file():
            raise UsageError(f"{store} is neither a store URL (postgresql://...) nor a sweep directory or SQLite file")
        store = str(path.resolve())
    try:
        opened = Store(store, name, create=False)
        opened.info  # noqa: B018  (a store without sweeps says so here)
    except StoreError as e:
        raise UsageError(str(e)) from None
    return opened, store
