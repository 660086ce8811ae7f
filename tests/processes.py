"""Waiting on what other processes do, never on the clock.

A test that signals a worker "mid-run" races the worker when it reads the state and then signals:
on a busy machine the test can be descheduled between the two while the run finishes. `frozen`
takes the race away: the worker is stopped (SIGSTOP) before the test reads its state, so what the
test reads still holds when the signal lands; the signal waits as pending, and the worker handles
it before it trains another batch once continued. The deadlines below are for real hangs only."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
HANG_S = 300.0  # a state not reached in five minutes on two busy cores is a hang, not a slow machine


def wait_until(condition: Callable[[], T], what: str, timeout: float = HANG_S, every: float = 0.1) -> T:
    """The first truthy value of `condition()`, polled until `timeout`, after which the test fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def stopped(pid: int) -> bool:
    """Stopped by a signal (or gone, which is as still)."""
    return _status(pid).get("State", "T").startswith(("T", "t"))


def pending(pid: int, sig: signal.Signals) -> bool:
    """`sig` was sent to the (stopped) process and waits to be handled; or the process is gone."""
    status = _status(pid)
    if not status:
        return True
    mask = int(status["ShdPnd"], 16) | int(status["SigPnd"], 16)
    return bool(mask >> (sig - 1) & 1)


def group(pgid: int) -> list[int]:
    """The processes of a process group (a worker started with start_new_session and its children)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def descendants(root: int) -> set[int]:
    """The living processes started (directly or not) by `root`: whatever process group they lead."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie left for its parent to reap (nor gone)."""
    return _status(pid).get("State", "Z").split()[0] not in ("Z", "X")


def freeze(pids: Iterable[int]) -> list[int]:
    """SIGSTOP the processes and wait until each is seen stopped; the pids."""
    pids = list(pids)
    for pid in pids:
        with suppress(ProcessLookupError):  # gone already: as still as stopped
            os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: all(stopped(p) for p in pids), "the processes to stop", every=0.01)
    return pids


def thaw(pids: Iterable[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@contextmanager
def frozen(pids: Iterable[int]) -> Iterator[list[int]]:
    """The processes stopped for the block, continued after it whatever happens."""
    pids = freeze(pids)
    try:
        yield pids
    finally:
        thaw(pids)


def epochs_logged(run_dir: Path) -> int:
    """Epochs the training loop has logged to the run directory (synchronously, as it trains)."""
    metrics = run_dir / "metrics.jsonl"
    return len(metrics.read_text().splitlines()) if metrics.exists() else 0


def still_training(run_dir: Path, epochs: int) -> bool:
    """Of a frozen worker's run: at least one whole epoch is left, so the loop checks its stop flag
    at least once more before the run can end (`should_stop` is asked before every batch)."""
    return not (run_dir / "summary.json").exists() and epochs_logged(run_dir) <= epochs - 2
