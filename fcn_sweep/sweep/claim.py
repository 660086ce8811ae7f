"""One claim of a worker (a run alone, or a pack): its trackers (the run directory, W&B, the store,
Hyperband's judge), its training, every outcome recorded, and what the store could not take, or a
pack that ran out of device memory, handed back (worker.py's loop claims and calls `train_claim`)."""

from __future__ import annotations

import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from .. import tracking
from ..tracking import Tracker
from ..train import FitResult
from .controller import Controller
from .recorder import Health, Heartbeat, Recorder
from .store import StoredRun, StoreUnavailable

JUDGE_WAIT_S = 5.0  # how long Hyperband's judgement waits for the epoch it judges to be in the store


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


class Claim:
    """One claim (a run alone, or a pack): trained, every outcome recorded, and what the store
    could not take handed back."""

    def __init__(self, spec, store, controller, claimed, interrupted, wandb, health, say):
        self.spec, self.store, self.controller, self.claimed = spec, store, controller, claimed
        self.interrupted, self.wandb, self.say = interrupted, wandb, say
        self.owner = claimed[0].worker
        self.split_to: int | None = None  # set when the pack ran out of device memory: the next pack's size
        self.recorder = Recorder(store, self.owner, [r.id for r in claimed], health, say)

    def train(self, data) -> None:
        """Train the claimed runs (one alone, several as a pack) and record every outcome in the store."""
        import torch

        from ..footprint import out_of_memory_line
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
        except torch.cuda.OutOfMemoryError:
            rec.flush()
            if len(claimed) > 1:  # the pack's size, not its configs: they start again in smaller packs
                self.split_to = len(claimed) // 2
                self._hand_back("preempted", f"out of memory in a pack of {len(claimed)}")
            else:  # a run alone that does not fit: the config's error, with what it needed
                self._crash(out_of_memory_line(claimed[0].config, spec.device))
            self._settle()
        except Exception:  # a bug in one config must not take the sweep down
            rec.flush()  # outcomes already made stand; only the runs without one crashed
            self._crash(traceback.format_exc(limit=3))
            self._settle()
        finally:
            beat.done.set()
            rec.close()

    def _crash(self, error: str) -> None:
        """Every claimed run without an outcome yet ends crashed with `error`."""
        rec, store = self.recorder, self.store
        for r in self.claimed:
            if r.id in rec.live:
                rec.submit(r.id, lambda r=r: store.finish(r.id, "crashed", {"error": error}, "error", self.owner))

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
