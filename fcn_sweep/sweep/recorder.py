"""What a worker writes to the store while it trains a claim, and how it rides out a store that
goes away: the Recorder (one thread that writes, in order) and the Heartbeat (one that beats).

Training never waits for the store. Each epoch, the run directory's path and the outcome are
queued and written in order by the Recorder's thread; while the store is away (a restart, a
dropped connection) they wait in the queue, and when it returns they are written, oldest first,
so the store ends up holding what the run directory holds. Both threads say in one line when the
store went away and when it came back (Health). If it stays away for the whole retry window
(FCN_SWEEP_STORE_RETRY_S), `Health.expired` stops the claim and the worker hands its runs back.

Fencing (see store.attempts): every write names this worker; a write refused because the
attempt was re-queued and taken while this worker was presumed lost (a frozen process, a node that
hung) marks that run `taken`, which stops its training. Nothing more of it is written.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .store import Store, StoreUnavailable, Taken

HEARTBEAT_S = 0.5
RETRY_WAIT_S = (0.1, 2.0)  # first and longest wait between tries of a write while the store is away


class Health:
    """Whether the store answers, as the Recorder and the Heartbeat find it; says each change once."""

    def __init__(self, window_s: float, say: Callable[[str], None]):
        self.window_s, self.say = window_s, say
        self.lock = threading.Lock()
        self.away_since: float | None = None
        self.why = ""

    def lost(self, error: Exception) -> None:
        with self.lock:
            if self.away_since is None:
                self.away_since, self.why = time.monotonic(), str(error).split(": ", 1)[-1]
                self.say(
                    f"the store is unreachable ({self.why}); training goes on and its records wait, "
                    f"for up to {self.window_s:g} s"
                )

    def back(self) -> None:
        with self.lock:
            if self.away_since is not None:
                self.say(f"the store is back after {time.monotonic() - self.away_since:.1f} s; writing what waited")
                self.away_since = None

    @property
    def away(self) -> bool:
        return self.away_since is not None

    def expired(self) -> bool:
        since = self.away_since
        return since is not None and time.monotonic() - since > self.window_s


class Recorder(threading.Thread):
    """The claim's writes, in the order they were made, from one thread (see the module docstring)."""

    def __init__(self, store: Store, owner: str, run_ids: list[str], health: Health, say: Callable[[str], None]):
        super().__init__(daemon=True, name="recorder")
        self.store, self.owner, self.health, self.say = store, owner, health, say
        self.live = set(run_ids)  # runs whose outcome is not recorded yet: the heartbeat beats these
        self.taken = {i: threading.Event() for i in run_ids}
        self.lock = threading.Lock()  # an outcome and a heartbeat never cross (see Heartbeat)
        self.ops: deque[tuple[str, Callable[[], None], bool]] = deque()
        self.changed = threading.Condition()
        self.closed = False

    def submit(self, run_id: str, write: Callable[[], None], final: bool = False) -> None:
        with self.changed:
            self.ops.append((run_id, write, final))
            self.changed.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write made so far is in the store (True), or the timeout passes or the
        store stayed away past the window (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.changed:
            while self.ops and not self.health.expired():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self.changed.wait(0.1 if left is None else min(left, 0.1))
            return not self.ops

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def run(self) -> None:
        while True:
            with self.changed:
                while not self.ops and not self.closed:
                    self.changed.wait()
                if not self.ops:
                    return
                run_id, write, final = self.ops[0]
            if not self._write(run_id, write, final):
                return  # past the window: what is left is handed back by the worker
            with self.changed:
                self.ops.popleft()
                self.changed.notify_all()

    def _write(self, run_id: str, write: Callable[[], None], final: bool) -> bool:
        wait = RETRY_WAIT_S[0]
        while not self.taken[run_id].is_set():
            try:
                with self.store.patience(0), self.lock:
                    write()
                    if final:
                        self.live.discard(run_id)
                self.health.back()
                return True
            except Taken:
                self.mark_taken(run_id)
            except StoreUnavailable as e:
                self.health.lost(e)
                if self.health.expired():
                    return False
                time.sleep(wait)
                wait = min(2 * wait, RETRY_WAIT_S[1])
            except Exception as e:  # not the store being away (a bug, a value it refuses): said, not fatal
                self.say(f"run {run_id}: a record could not be written to the store ({type(e).__name__}: {e})")
                return True
        return True  # a taken run's writes are dropped

    def mark_taken(self, run_id: str) -> None:
        if not self.taken[run_id].is_set():
            self.taken[run_id].set()
            self.live.discard(run_id)
            self.say(
                f"run {run_id} was re-queued while this worker was presumed lost (its heartbeat was silent past "
                "the stale limit) and is another worker's now; stopping it here, writing nothing more of it"
            )


class Heartbeat(threading.Thread):
    """Beats for the claim's runs whose outcome is not recorded yet; `stop_requested[run_id]` is set
    when the store asks a run to stop (Hyperband). It never dies: a beat that fails is tried again
    next time, and the Health says the store is away (its runs may be reaped meanwhile)."""

    def __init__(self, recorder: Recorder):
        super().__init__(daemon=True, name="heartbeat")
        self.recorder = recorder
        self.stop_requested = {i: threading.Event() for i in recorder.taken}
        self.done = threading.Event()

    def run(self) -> None:
        rec = self.recorder
        while not self.done.wait(HEARTBEAT_S):
            try:
                with rec.store.patience(0), rec.lock:
                    ids = sorted(rec.live)
                    beat = rec.store.heartbeat(ids, rec.owner) if ids else None
                rec.health.back()
            except StoreUnavailable as e:
                rec.health.lost(e)
                continue
            except Exception as e:  # a bug must not silence the heartbeat: say it, and beat again
                rec.say(f"heartbeat failed ({type(e).__name__}: {e}); trying again")
                continue
            if beat is None:
                continue
            for run_id in beat.stop:
                self.stop_requested[run_id].set()
            for run_id in beat.taken:
                rec.mark_taken(run_id)
