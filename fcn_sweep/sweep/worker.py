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
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .. import tracking
from ..config import RunConfig
from ..tracking import Tracker
from ..train import FitResult
from .controller import Controller
from .recorder import Health, Heartbeat, Recorder
from .store import EXIT_STORE, Store, StoredRun, StoreError, StoreUnavailable

IDLE_POLL_S = 0.25
STALE_ENV = "FCN_SWEEP_STALE_S"
# A running run whose heartbeat is older than this (database clock) has lost its worker.
STALE_S = float(os.environ.get(STALE_ENV) or 15.0)
REAP_EVERY_S = 2.0
JUDGE_WAIT_S = 5.0  # how long Hyperband's judgement waits for the epoch it judges to be in the store


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


class StoreTracker(Tracker):
    """Mirrors the run into the store: every epoch, then the outcome, queued on the claim's Recorder
    and fenced to this worker. It records; it decides nothing."""

    def __init__(self, recorder: Recorder, run: StoredRun, stop_reason: Callable[[], str]):
        self.recorder, self.run, self.stop_reason = recorder, run, stop_reason

    def log_epoch(self, metrics: dict[str, float]) -> None:
        row, store, owner = tracking.jsonable(metrics), self.recorder.store, self.run.worker
        self.recorder.submit(self.run.id, lambda: store.log_epoch(self.run.id, row, owner))

    def finish(self, result: FitResult) -> None:
        reason = self.stop_reason() if result.status == "stopped" else None
        summary, store, owner = tracking.jsonable(result.summary()), self.recorder.store, self.run.worker
        self.recorder.submit(
            self.run.id, lambda: store.finish(self.run.id, result.status, summary, reason, owner), final=True
        )


class HyperbandJudge(Tracker):
    """The worker's early-termination decision, made as each epoch of its run lands (after the
    StoreTracker recorded it): the engine's Hyperband judges every running run of the sweep, flags
    those of other workers in the store, and stops this one at once when it fails its bracket.
    Deciding per epoch rather than on a timer stops a run at the bracket it fails."""

    def __init__(self, run: StoredRun, controller: Controller, recorder: Recorder):
        self.run, self.controller, self.recorder = run, controller, recorder
        self.stop_requested = threading.Event()

    def log_epoch(self, metrics: dict[str, float]) -> None:
        # Judged on the store as it is once this epoch is in it; while the store is away, not at all
        # (training does not wait for it), and the next epoch that reaches it is judged.
        if self.recorder.health.away or not self.recorder.flush(JUDGE_WAIT_S):
            return
        try:
            with self.recorder.store.patience(0):
                stop = self.run.id in self.controller.early_stop()
        except StoreUnavailable:
            return
        if stop:
            self.stop_requested.set()


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

    reaped_at = 0.0
    left = spec.count if spec.count is not None else float("inf")
    while not interrupted.is_set() and left > 0:
        if time.monotonic() - reaped_at > REAP_EVERY_S:
            reap(store)
            reaped_at = time.monotonic()
        if not store.info.closed:
            maintain(store, controller, spec.pack)
        claimed = store.claim_many(tag, int(min(spec.pack, left)), host)
        left -= len(claimed)
        if not claimed:
            if sweep_done(store):
                break
            time.sleep(IDLE_POLL_S)
            continue
        # The store's health is judged per claim: the claim itself just found the store answering.
        claim = Claim(spec, store, controller, claimed, interrupted, wandb, Health(store.window, say), say)
        claim.train(data_for(claimed[0].config.subset))
        wandb.report(wait=False)
    wandb.close()
    store.close()


class WandbRuns:
    """The worker's W&B runs, logged from one background thread (`tracking.BackgroundTracker`). A failure
    is reported on stderr, one line a run, and fails neither the run nor the sweep: the run
    directory and the store hold everything W&B would have."""

    def __init__(self, spec: WorkerSpec):
        self.spec = spec
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb")
        self.pending: list[tuple[str, tracking.BackgroundTracker]] = []

    def tracker(self, run_id: str, rundir: tracking.RunDirTracker) -> list[Tracker]:
        if self.spec.wandb_mode == "disabled":
            return []
        wandb_run = tracking.WandbTracker(
            rundir, self.spec.wandb_mode, group=self.spec.group, job_type="sweep", requirements=False
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
                f"{len(cut)} run(s) stop early ({', '.join(cut)}); their run directories and the store hold every epoch"
            )
        self.pending = still

    def close(self) -> None:
        """Every run's W&B events done and reported; then the W&B service stopped quietly."""
        self.report(wait=True)
        tracking.teardown_wandb()

    def say(self, text: str) -> None:
        print(f"fcn-sweep {self.spec.name}: {text}", file=sys.stderr)


class Claim:
    """One claim (a run alone, or a pack): trained, every outcome recorded, and what the store
    could not take handed back."""

    def __init__(self, spec, store, controller, claimed, interrupted, wandb, health, say):
        self.spec, self.store, self.controller, self.claimed = spec, store, controller, claimed
        self.interrupted, self.wandb, self.say = interrupted, wandb, say
        self.owner = claimed[0].worker
        self.recorder = Recorder(store, self.owner, [r.id for r in claimed], health, say)

    def train(self, data) -> None:
        """Train the claimed runs (one alone, several as a pack) and record every outcome in the store."""
        from ..packed import fit_packed
        from ..train import fit

        spec, store, claimed, rec, interrupted = self.spec, self.store, self.claimed, self.recorder, self.interrupted
        beat = Heartbeat(rec)
        rec.start()
        beat.start()
        reason = lambda: interrupted.cause if interrupted.is_set() else "hyperband"  # noqa: E731
        trackers, member_stops = [], []
        for r in claimed:
            rundir = tracking.RunDirTracker(Path(spec.out).resolve() / "runs", r.id)
            rec.submit(r.id, lambda r=r, path=str(rundir.path): store.set_run_dir(r.id, path, self.owner))
            judge = HyperbandJudge(r, self.controller, rec)
            trackers.append(
                tracking.Trackers([rundir, *self.wandb.tracker(r.id, rundir), StoreTracker(rec, r, reason), judge])
            )
            stops = (beat.stop_requested[r.id], judge.stop_requested, rec.taken[r.id])
            member_stops.append(lambda stops=stops: any(e.is_set() for e in stops))
        # The whole claim stops on a signal, or when the store stayed away past the window.
        halt = lambda: interrupted.is_set() or rec.health.expired()  # noqa: E731
        try:
            if len(claimed) == 1:
                stop = lambda: halt() or member_stops[0]()  # noqa: E731
                fit(claimed[0].config, trackers[0], data=data, device=spec.device, should_stop=stop)
            else:
                cfgs = [r.config for r in claimed]
                fit_packed(cfgs, trackers, data, spec.device, should_stop=halt, member_stops=member_stops)
            self._settle()
        except OSError as e:
            # This host's disk or mount failed (full, gone read-only), not the config: the slots go back to
            # pending for a worker that can write, and this worker leaves (its runner restarts it a few times).
            rec.flush()
            self._hand_back("crashed", f"write failed: {e.strerror or e}")
            raise
        except Exception:  # a bug or an OOM in one config must not take the sweep down
            error = traceback.format_exc(limit=3)
            rec.flush()  # outcomes already made stand; only the runs without one crashed
            for r in claimed:
                if r.id in rec.live:
                    rec.submit(r.id, lambda r=r: store.finish(r.id, "crashed", {"error": error}, "error", self.owner))
            self._settle()
        finally:
            beat.done.set()
            rec.close()

    def _settle(self) -> None:
        """Once training ended: wait for the records to reach the store; then re-queue the runs a
        signal interrupted, or hand back what the store could not take (StoreUnavailable)."""
        rec, store, interrupted = self.recorder, self.store, self.interrupted
        if not rec.flush():
            self._hand_back("crashed", "store unreachable")
            raise StoreUnavailable(f"the store {store.shown} was unreachable for over {rec.health.window_s:g} s "
                                   f"({rec.health.why})")  # fmt: skip
        if interrupted.is_set():
            # Only runs the interrupt stopped: one that Hyperband stopped earlier is done for good.
            again = [r.id for r in self.claimed if store.get_run(r.id).stop_reason == interrupted.cause]
            # The signal, as the reason: scancel (TERM) or a warning (USR1); Ctrl-C: interrupted.
            status, why = ("preempted", interrupted.signal_name) if interrupted.cause == "preempted" else (
                "stopped", "interrupted")  # fmt: skip
            store.requeue(again, [tracking.new_run_id() for _ in again], status, why, self.owner)

    def _hand_back(self, status: str, reason: str) -> None:
        """The runs still this worker's and in flight get a fresh pending attempt each; if the store
        cannot take even that now, they are left for the reaper (their heartbeat is silent)."""
        mine = [r.id for r in self.claimed if not self.recorder.taken[r.id].is_set()]
        try:
            with self.store.patience(0 if self.recorder.health.expired() else self.store.window):
                self.store.requeue(mine, [tracking.new_run_id() for _ in mine], status, reason, self.owner)
        except StoreUnavailable:
            pass


def train_claim(spec, store, controller, claimed, data, interrupted, wandb) -> None:
    """One claim, trained and recorded, as a worker does it (tests call it directly)."""
    say = lambda text: print(f"fcn-sweep worker {spec.name}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    Claim(spec, store, controller, claimed, interrupted, wandb, Health(store.window, say), say).train(data)
