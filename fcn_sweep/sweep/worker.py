"""A sweep worker: a process that claims the next run from the store, trains it with the same
`fit(cfg, tracker)` as every other caller, and writes the outcome back. With `--pack K` it claims
up to K pending runs of one shape (`packed.pack_key`) and trains them at once with `fit_packed`;
each is still its own run in the store, its own run directory and its own W&B run.

No process is in charge of a sweep: every worker, on any host, also tops up the proposals of a
random or bayes sweep when fewer than its pack are pending, and re-queues runs whose worker was
lost, each under the store's sweep lock. A worker leaves when the sweep is done (nothing pending,
nothing running, no proposal to come), the claim budget of `sweep --count` is spent, or it has
claimed the runs of its own `worker --count`.

A heartbeat thread marks the claimed runs alive twice a second (on the database's clock) and picks
up stop requests (Hyperband); a worker that dies (SIGKILL, OOM) simply stops beating, and whichever
worker reaps next re-queues its runs. SIGINT (Ctrl-C) ends the runs in flight as `stopped` (reason
`interrupted`); SIGTERM or SIGUSR1 (SLURM's scancel, or its warning before a time limit or a
preemption) ends them as `preempted`, which no one counts as crashed. Either way each slot gets a
fresh pending attempt at once, for this sweep's next worker, and the worker exits within a batch.

The store may go away for a while (a restart, dropped connections): training goes on, its records
wait and are written when the store returns (recorder). A store that stays away for the whole
retry window (FCN_SWEEP_STORE_RETRY_S) is never recorded as a config's crash: the runs in flight
are handed back (re-queued with the reason, or left for the reaper when even that cannot be
written) and the worker exits with EXIT_STORE and one line, to be started again by whoever
started it (SLURM's requeue, a supervisor). A worker that froze past the stale limit finds its
runs taken by others when it wakes, and stops them (fencing: see store.attempts).

Costs paid once per worker, not per run: importing torch, loading the data of the runs pending at
start, the first use of the BLAS and of W&B (~1 s of imports and the service start on the first `wandb.init`) happen in
`warm_up`, before the first claim, so that a run's own time is its training.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .. import tracking
from ..config import RunConfig
from ..tracking import Tracker
from .claim import Claim
from .controller import Controller
from .recorder import Health
from .store import EXIT_STORE, Store, StoredRun, StoreError

IDLE_POLL_S = 0.25
STALE_ENV = "FCN_SWEEP_STALE_S"
# A running run whose heartbeat is older than this (database clock) has lost its worker.
STALE_S = float(os.environ.get(STALE_ENV) or 15.0)
REAP_EVERY_S = 2.0


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    store: str  # the store URL; it may hold a password, so it is never printed or put on a command line
    sweep: str  # the sweep's name in the store
    out: str  # run directories go to OUT/runs/<id> on this host
    device: str
    threads: int
    wandb_mode: str
    group: str
    pack: int = 1  # runs of one shape trained at once
    count: int | None = None  # runs this worker claims before it leaves (`worker --count`); None: no limit


def this_host() -> str:
    """The name a worker records as its host; FCN_SWEEP_HOST overrides it (where a cluster's nodes
    share a name, or to try a second host on one machine)."""
    return os.environ.get("FCN_SWEEP_HOST") or socket.gethostname()


def gone(run: StoredRun) -> bool:
    """Whether the worker of a run was a process of this host that no longer exists. A worker of
    another host is judged by its heartbeat alone: its pid means nothing here."""
    _, _, where = (run.worker or "").partition(":")
    pid = where.partition("@")[0]
    if run.host != this_host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, under another user
        pass
    return False


def reap(store: Store) -> list[str]:
    """Re-queue the running attempts whose worker is lost (see Store.reap)."""
    return store.reap(STALE_S, gone, tracking.new_run_id)


def maintain(store: Store, controller: Controller, want_pending: int) -> None:
    """A worker's share of running the sweep: propose (random/bayes) until `want_pending` are
    pending, mark the sweep closed once no proposal can follow, under the sweep lock (a blip of the
    store retries the whole block: its transaction went with the connection)."""

    def under_lock() -> None:
        with store.exclusive():
            controller.top_up(want_pending)
            if controller.exhausted() and not store.info.closed:
                store.set_closed(True)

    store.retry(under_lock)


def sweep_done(store: Store) -> bool:
    """Nothing left for any worker: the claim budget is spent, or no proposal can follow and no
    run is pending or running (a running one may still be lost and re-queued)."""
    if store.budget_spent():
        return True
    counts = store.counts()
    return store.info.closed and counts["pending"] == 0 and counts["running"] == 0


def warm_up(device: str, wandb_mode: str) -> None:
    """Pay the per-process first-use costs of torch and W&B (see the module docstring) before any run."""
    import torch

    from ..packed import Pack

    if wandb_mode != "disabled":
        tracking.warm_up_wandb()
    pack = Pack([RunConfig(hidden=(8,))], torch.device(device))
    y = torch.zeros(1, 2, dtype=torch.long, device=device)
    pack.train_step(torch.zeros(1, 2, 28 * 28, device=device), y, torch.zeros(1, device=device), y[:, 0].clone())


SIGNAL_CAUSES = {signal.SIGINT: "interrupted", signal.SIGTERM: "preempted", signal.SIGUSR1: "preempted"}


class Interrupt(threading.Event):
    """Set by the first of SIGINT, SIGTERM or SIGUSR1; `cause` says what the runs in flight end as:
    a person's Ctrl-C interrupts them, a scheduler's signal preempts them."""

    def __init__(self):
        super().__init__()
        self.cause, self.signal_name = "interrupted", ""

    def install(self) -> None:
        for sig in SIGNAL_CAUSES:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if not self.is_set():
            self.cause, self.signal_name = SIGNAL_CAUSES[signum], signal.Signals(signum).name
        self.set()


def main(spec: WorkerSpec) -> None:
    """The worker process: exits 0 when the sweep is done, EXIT_STORE (one line) when the store
    stayed away past the retry window or cannot be opened."""
    say = lambda text: print(f"fcn-sweep worker {spec.name}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        work(spec, say)
    except StoreError as e:  # StoreUnavailable, or a store that cannot be opened any more
        say(f"{e}; exiting with code {EXIT_STORE}, to be started again once the store is back")
        sys.exit(EXIT_STORE)


def work(spec: WorkerSpec, say: Callable[[str], None]) -> None:
    import torch

    from .. import data as data_mod
    from ..footprint import free_device_memory

    torch.set_num_threads(spec.threads)
    interrupted = Interrupt()
    interrupted.install()
    store = Store(spec.store, spec.sweep, create=False, wait=True)  # a store restarting as the worker starts
    controller = Controller(store)
    data_for = functools.cache(lambda subset: data_mod.load(spec.device, subset))  # once per worker
    warm_up(spec.device, spec.wandb_mode)
    for subset in store.pending_subsets():  # the data the first claim will want, as part of warming up
        data_for(subset)
    host = this_host()
    tag = f"{spec.name}:{os.getpid()}@{host}"
    wandb = WandbRuns(spec)

    reaped_at, pack = 0.0, spec.pack
    left = spec.count if spec.count is not None else float("inf")
    while not interrupted.is_set() and left > 0:
        if time.monotonic() - reaped_at > REAP_EVERY_S:
            reap(store)
            reaped_at = time.monotonic()
        if not store.info.closed:
            maintain(store, controller, spec.pack)
        claimed = store.claim_many(tag, int(min(pack, left)), host)
        left -= len(claimed)
        if not claimed:
            if sweep_done(store):
                break
            time.sleep(IDLE_POLL_S)
            continue
        # The store's health is judged per claim: the claim itself just found the store answering.
        claim = Claim(spec, store, controller, claimed, interrupted, wandb, Health(store.window, say), say)
        claim.train(data_for(claimed[0].config.subset))
        if claim.split_to:
            say(f"out of memory on {spec.device} with a pack of {len(claimed)}: its runs start again, "
                f"in packs of {claim.split_to}")  # fmt: skip
            pack, left = claim.split_to, left + len(claimed)  # the same runs, again
            free_device_memory()  # the failed pack's tensors, cached by torch
        wandb.report(wait=False)
    wandb.close()
    store.close()


class WandbRuns:
    """The W&B runs of a worker (or of a packed W&B agent), logged from one background thread
    (`tracking.BackgroundTracker`). A failure is reported on stderr, one line a run, and fails
    neither the run nor the sweep: the run directory (and the store) hold everything W&B would have."""

    def __init__(self, spec: WorkerSpec, kept: str = "their run directories and the store hold"):
        self.spec, self.kept = spec, kept
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb")
        self.pending: list[tuple[str, tracking.BackgroundTracker]] = []

    def tracker(
        self, run_id: str, rundir: tracking.RunDirTracker, member: tracking.SweepMember | None = None
    ) -> list[Tracker]:
        """`member`: the run is one of a W&B sweep's, held by a packed `fcn-sweep wandb-agent`."""
        if self.spec.wandb_mode == "disabled":
            return []
        wandb_run = tracking.WandbTracker(
            rundir, self.spec.wandb_mode, group=self.spec.group, job_type="sweep", requirements=False, sweep=member
        )
        deferred = tracking.BackgroundTracker(wandb_run, self.executor)
        self.pending.append((run_id, deferred))
        return [deferred]

    def report(self, wait: bool) -> None:
        if wait:
            self.executor.shutdown(wait=True)
        still, cut = [], []
        for run_id, deferred in self.pending:
            if not all(f.done() for f in deferred.futures):
                still.append((run_id, deferred))
            elif errors := deferred.errors():
                if tracking.service_gone(errors[0]):
                    cut.append(run_id)
                else:
                    self.say(f"W&B logging of run {run_id} failed: {errors[0]!r}")
        if cut:  # one cause for all of them: say it once
            self.say(
                f"the W&B service process ended (scancel signals every process of a task), so the W&B logs of "
                f"{len(cut)} run(s) stop early ({', '.join(cut)}); {self.kept} every epoch"
            )
        self.pending = still

    def close(self) -> None:
        """Every run's W&B events done and reported; then the W&B service stopped quietly."""
        self.report(wait=True)
        tracking.teardown_wandb()

    def say(self, text: str) -> None:
        print(f"fcn-sweep {self.spec.name}: {text}", file=sys.stderr)
