"""What status, the report, the display and the controller read from the Store; each read waits
out a blip of the database (retry.retried)."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import distinct, func, select

from .retry import retried
from .rows import DONE, FINAL, STATUSES, StoredRun
from .schema import metrics, runs


class Reads:
    """Mixed into Store: needs its `_read` and `_sid`."""

    @retried
    def get_run(self, run_id: str) -> StoredRun:
        with self._read() as conn:
            return StoredRun.from_row(conn.execute(select(runs).where(runs.c.id == run_id)).one())

    @retried
    def runs(self, statuses: Iterable[str] = STATUSES, ended_since: float | None = None) -> list[StoredRun]:
        """Attempts in these statuses, in sweep order; with `ended_since`, only those that ended at or
        after that time (the database's clock, as `now()`), so a poller reads what is new, not the sweep."""
        q = select(runs).where(runs.c.sweep_id == self._sid, runs.c.status.in_(tuple(statuses)))
        if ended_since is not None:
            q = q.where(runs.c.ended >= ended_since)
        q = q.order_by(runs.c.slot, runs.c.created)
        with self._read() as conn:
            return [StoredRun.from_row(r) for r in conn.execute(q)]

    @retried
    def done_runs(self) -> list[StoredRun]:
        """Attempts that ended for good (see DONE)."""
        q = select(runs).where(runs.c.sweep_id == self._sid, DONE).order_by(runs.c.slot, runs.c.created)
        with self._read() as conn:
            return [StoredRun.from_row(r) for r in conn.execute(q)]

    @retried
    def histories(self, run_ids: Iterable[str]) -> dict[str, list[dict]]:
        ids = tuple(run_ids)
        out: dict[str, list[dict]] = {i: [] for i in ids}
        with self._read() as conn:
            for chunk in range(0, len(ids), 500):
                part = ids[chunk : chunk + 500]
                q = select(metrics.c.run_id, metrics.c.data).where(metrics.c.run_id.in_(part))
                for r in conn.execute(q.order_by(metrics.c.run_id, metrics.c.epoch)):
                    out[r.run_id].append(json.loads(r.data))
        return out

    @retried
    def last_epoch(self, run_id: str) -> dict | None:
        q = select(metrics.c.data).where(metrics.c.run_id == run_id).order_by(metrics.c.epoch.desc()).limit(1)
        with self._read() as conn:
            data = conn.execute(q).scalar()
        return json.loads(data) if data else None

    @retried
    def epoch_seconds(self) -> dict[str, dict[int, float]]:
        """{run id: {epoch: its time/epoch_s}} over the sweep (status's time accounting)."""
        q = (
            select(metrics.c.run_id, metrics.c.epoch, metrics.c.data)
            .join(runs, runs.c.id == metrics.c.run_id)
            .where(runs.c.sweep_id == self._sid)
        )
        out: dict[str, dict[int, float]] = {}
        with self._read() as conn:
            for r in conn.execute(q):
                out.setdefault(r.run_id, {})[r.epoch] = json.loads(r.data).get("time/epoch_s") or 0.0
        return out

    @retried
    def pending_subsets(self) -> list[int]:
        """The distinct training subsets of the pending runs (a worker loads their data up front)."""
        q = select(runs.c.subset).distinct().where(runs.c.sweep_id == self._sid, runs.c.status == "pending")
        with self._read() as conn:
            return sorted(conn.execute(q).scalars())

    @retried
    def counts(self) -> dict[str, int]:
        q = select(runs.c.status, func.count()).where(runs.c.sweep_id == self._sid).group_by(runs.c.status)
        with self._read() as conn:
            return {**dict.fromkeys(STATUSES, 0), **dict(conn.execute(q).all())}

    @retried
    def n_proposals(self) -> int:
        q = select(func.count(distinct(runs.c.proposal))).where(runs.c.sweep_id == self._sid)
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    @retried
    def slots(self) -> tuple[int, int]:
        """(slots done for good, slots known)."""
        mine = runs.c.sweep_id == self._sid
        with self._read() as conn:
            done = conn.execute(select(func.count(distinct(runs.c.slot))).where(mine, DONE)).scalar_one()
            total = conn.execute(select(func.count(distinct(runs.c.slot))).where(mine)).scalar_one()
        return done, total

    @retried
    def best(self) -> StoredRun | None:
        scored = [r for r in self.runs(FINAL) if r.summary.get("best_val_acc") is not None]
        return max(scored, key=lambda r: r.summary["best_val_acc"], default=None)
