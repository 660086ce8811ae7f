"""Claims and every write to an attempt, for the Store.

Fencing: a worker that froze (a stopped process, a node that hung, a network that healed) may come
back after its attempt was re-queued and taken by another worker. So every write a worker makes to
its attempt (an epoch, the run directory, the outcome, a heartbeat, a hand-back) carries its name
(`owner`, as recorded at the claim) and applies only while the attempt is still `running` and
claimed by it, checked in the same statement that writes. A refused write raises Taken, and the
late worker stops that run. Without `owner` (tests, tools), the write is not fenced.

A write is retried after a blip (retry.retried); each one is idempotent, so a retry after a commit
whose answer was lost changes nothing: an epoch is replaced by itself, an outcome already recorded
is recognised, and a slot gets a fresh attempt only from an attempt that has none after it yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, delete, exists, insert, or_, select, update

from .retry import retried
from .rows import STATUSES, StoredRun
from .schema import metrics, runs, sweeps

_PENDING = and_(runs.c.sweep_id == bindparam("sid"), runs.c.status == "pending")
_BUDGET = select(sweeps.c.budget).where(sweeps.c.id == bindparam("sid"))
# See dialects for what FOR UPDATE SKIP LOCKED does on each backend.
_FIRST_PENDING = (
    select(runs.c.id, runs.c.pack_key)
    .where(_PENDING)
    .order_by(runs.c.slot, runs.c.created)
    .limit(1)
    .with_for_update(skip_locked=True)
)
_SAME_SHAPE = (
    select(runs.c.id)
    .where(_PENDING, runs.c.pack_key == bindparam("key"), runs.c.id != bindparam("first"))
    .order_by(runs.c.slot, runs.c.created)
    .limit(bindparam("n"))
    .with_for_update(skip_locked=True)
)
_LATER = runs.alias("later")
# An attempt whose slot already has a newer attempt was handed back already: never twice.
_HAS_SUCCESSOR = exists().where(
    _LATER.c.sweep_id == runs.c.sweep_id,
    _LATER.c.slot == runs.c.slot,
    _LATER.c.id != runs.c.id,
    _LATER.c.created >= runs.c.created,
)
# What may be handed back: an attempt in flight, or one its worker ended as interrupted/preempted.
_HANDABLE = or_(
    runs.c.status.in_(("pending", "running")),
    and_(runs.c.status == "stopped", runs.c.stop_reason.in_(("interrupted", "preempted"))),
)


class Taken(Exception):
    """The attempt is no longer this worker's: it was re-queued (its heartbeat went silent) and
    may be trained by another worker. Nothing was written."""

    def __init__(self, run_id: str):
        super().__init__(run_id)
        self.run_id = run_id


@dataclass(frozen=True)
class Beat:
    stop: set[str]  # runs asked to stop (Hyperband)
    taken: set[str]  # runs no longer this worker's (see Taken)


def _mine(run_id: str, owner: str | None):
    """The fencing condition: the attempt is running and claimed by `owner` (no owner: any attempt)."""
    if owner is None:
        return runs.c.id == run_id
    return and_(runs.c.id == run_id, runs.c.status == "running", runs.c.worker == owner)


class Attempts:
    """Mixed into Store: needs its `_write`, `_read`, `exclusive`, `dialect`, `_sid`, `_claim`."""

    @retried
    def claim_many(self, worker: str, limit: int, host: str | None = None) -> list[StoredRun]:
        """The next pending run and up to `limit - 1` more pending runs of the same `pack_key`, in
        sweep order, all now running under `worker`: a pack (`--pack`). Fewer when fewer match or
        the claim budget runs out; empty when nothing is pending. See dialects for the locking."""
        sid = self._sid
        with self._write() as conn:
            budget = conn.execute(_BUDGET, {"sid": sid}).scalar_one()
            if budget is not None:  # claims against a budget are counted one transaction at a time
                budget = conn.execute(_BUDGET.with_for_update(), {"sid": sid}).scalar_one()
                limit = min(limit, budget)
            if limit <= 0:
                return []
            first = conn.execute(_FIRST_PENDING, {"sid": sid}).first()
            if first is None:
                return []
            ids = [first.id]
            if limit > 1:
                more = {"sid": sid, "key": first.pack_key, "first": first.id, "n": limit - 1}
                ids += list(conn.execute(_SAME_SHAPE, more).scalars())
            claimed = conn.execute(self._claim, {"ids": ids, "worker": worker, "host": host})
            rows = {r.id: StoredRun.from_row(r) for r in claimed}
            if budget is not None:
                conn.execute(update(sweeps).where(sweeps.c.id == sid).values(budget=budget - len(ids)))
        return [rows[i] for i in ids]

    @retried
    def heartbeat(self, run_ids: list[str], owner: str | None = None) -> Beat:
        """Records that the runs (a worker's claim) are alive, in one write: those still its own."""
        ids = list(run_ids)
        mine = runs.c.id.in_(ids)
        if owner is not None:
            mine = and_(mine, runs.c.status == "running", runs.c.worker == owner)
        q = update(runs).where(mine).values(heartbeat=self.dialect.now()).returning(runs.c.id, runs.c.should_stop)
        with self._write() as conn:
            alive = conn.execute(q).all()
        return Beat(stop={r.id for r in alive if r.should_stop}, taken=set(ids) - {r.id for r in alive})

    @retried
    def log_epoch(self, run_id: str, epoch_metrics: dict, owner: str | None = None) -> None:
        epoch = epoch_metrics["epoch"]
        data = json.dumps(epoch_metrics, allow_nan=False)
        with self._write() as conn:
            # The fenced update first: it also holds the attempt's row until the epoch is in.
            done = conn.execute(
                update(runs).where(_mine(run_id, owner)).values(epoch=epoch, heartbeat=self.dialect.now())
            )
            if done.rowcount == 0 and owner is not None:
                raise Taken(run_id)
            conn.execute(delete(metrics).where(metrics.c.run_id == run_id, metrics.c.epoch == epoch))
            conn.execute(insert(metrics).values(run_id=run_id, epoch=epoch, data=data))

    @retried
    def set_run_dir(self, run_id: str, run_dir: str, owner: str | None = None) -> None:
        with self._write() as conn:
            done = conn.execute(update(runs).where(_mine(run_id, owner)).values(run_dir=run_dir))
            if done.rowcount == 0 and owner is not None:
                raise Taken(run_id)

    @retried
    def finish(self, run_id: str, status: str, summary: dict, stop_reason: str | None = None, owner=None) -> None:
        assert status in STATUSES, status
        text = json.dumps(summary, allow_nan=False)
        with self._write() as conn:
            q = update(runs).where(_mine(run_id, owner))
            q = q.values(status=status, summary=text, stop_reason=stop_reason, ended=self.dialect.now())
            if conn.execute(q).rowcount or owner is None:
                return
            # Refused: taken, or this very outcome recorded by a try whose answer was lost.
            row = conn.execute(select(runs.c.status, runs.c.summary, runs.c.worker).where(runs.c.id == run_id)).one()
            if (row.status, row.summary, row.worker) != (status, text, owner):
                raise Taken(run_id)

    @retried
    def request_stop(self, run_ids: Iterable[str]) -> None:
        ids = list(run_ids)
        if ids:
            with self._write() as conn:
                conn.execute(
                    update(runs).where(runs.c.id.in_(ids), runs.c.status == "running").values(should_stop=True)
                )

    @retried
    def requeue(
        self, run_ids: Iterable[str], new_ids: Iterable[str], status: str, reason: str, owner: str | None = None
    ) -> list[str]:
        """End these attempts as `status` and give each slot a fresh pending attempt with the same
        config; only attempts in flight (or interrupted by their worker), of `owner` if given, and
        not handed back already. Returns the ids of those ended."""
        pairs = dict(zip(run_ids, new_ids, strict=True))
        if not pairs:
            return []
        which = and_(runs.c.id.in_(list(pairs)), _HANDABLE, ~_HAS_SUCCESSOR)
        if owner is not None:
            which = and_(which, runs.c.worker == owner)
        with self._write() as conn:
            now = conn.execute(select(self.dialect.now())).scalar_one()
            q = update(runs).where(which).values(status=status, stop_reason=reason, ended=now).returning(runs.c.id)
            hit = set(conn.execute(q).scalars())
            ended = [i for i in pairs if i in hit]
            if not ended:
                return []
            old = {r.id: r for r in conn.execute(select(runs).where(runs.c.id.in_(ended)))}
            keep = ("sweep_id", "slot", "proposal", "repeat", "config", "params", "pack_key", "subset")
            fresh = [
                {**{k: getattr(old[o], k) for k in keep}, "id": pairs[o], "status": "pending", "should_stop": False,
                 "epoch": 0, "created": now}
                for o in ended
            ]  # fmt: skip
            conn.execute(insert(runs), fresh)
        return ended

    @retried
    def reap(self, stale_s: float, gone: Callable, new_id: Callable[[], str]) -> list[str]:
        """Under the sweep lock, re-queue running attempts whose worker is lost: silent for
        `stale_s` on the database's clock, or `gone` (a process of this host that no longer exists)."""
        with self.exclusive():
            now = self.now()
            lost = [r.id for r in self.runs(["running"]) if (r.heartbeat or 0) < now - stale_s or gone(r)]
            return self.requeue(lost, [new_id() for _ in lost], "crashed", "lost")
