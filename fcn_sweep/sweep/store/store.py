"""The sweep's single source of truth: configs, per-epoch metrics, summaries and run states.

Every process of a sweep, on any host, opens the same database: whoever creates the sweep plans
it, workers claim runs, write their epochs and outcomes, top up proposals and reap lost runs;
`fcn-sweep status` and the report read. A row of `runs` is one attempt at one slot; a lost or
interrupted attempt gets a fresh row for the same slot, so finished attempts are never touched
again. One database may hold many sweeps; a Store is opened on one of them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, distinct, func, insert, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from ...config import RunConfig
from .dialects import DIALECTS
from .schema import invocations, metadata, metrics, runs, sweeps
from .url import StoreError, parse, redact

# preempted: ended by a scheduler's signal (SLURM's scancel, a time limit's or a preemption's warning);
# not final and not a failure: its slot always has a fresh pending attempt behind it.
STATUSES = ("pending", "running", "finished", "diverged", "stopped", "crashed", "preempted")
FINAL = ("finished", "diverged", "stopped")
FILE = "sweep.db"  # a sweep directory's own SQLite store
# A slot is done for good once an attempt ended in a final state, unless it was only interrupted
# (Ctrl-C): such an attempt always has a fresh pending attempt behind it.
DONE = or_(
    runs.c.status.in_(("finished", "diverged")),
    and_(runs.c.status == "stopped", func.coalesce(runs.c.stop_reason, "") != "interrupted"),
)


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
_STOP_REQUESTED = select(runs.c.id).where(runs.c.id.in_(bindparam("ids", expanding=True)), runs.c.should_stop)


@dataclass(frozen=True)
class StoredRun:
    id: str
    slot: int
    proposal: int
    repeat: int
    config: RunConfig
    params: dict[str, Any]
    status: str
    stop_reason: str | None
    worker: str | None
    host: str | None
    heartbeat: float | None
    started: float | None
    ended: float | None
    epoch: int
    summary: dict[str, Any]
    run_dir: str | None

    @classmethod
    def from_row(cls, row) -> StoredRun:
        return cls(
            id=row.id, slot=row.slot, proposal=row.proposal, repeat=row.repeat,
            config=RunConfig.from_dict(json.loads(row.config)), params=json.loads(row.params), status=row.status,
            stop_reason=row.stop_reason, worker=row.worker, host=row.host, heartbeat=row.heartbeat,
            started=row.started, ended=row.ended, epoch=row.epoch,
            summary=json.loads(row.summary) if row.summary else {}, run_dir=row.run_dir,
        )  # fmt: skip


@dataclass(frozen=True)
class SweepInfo:
    """A sweep's own row: what it is and the options it was created with."""

    id: int
    name: str
    config: dict
    repeats: int
    order: str
    seed: int
    grid_size: int | None
    budget: int | None  # claims left to the running `fcn-sweep sweep --count` invocation
    closed: bool  # no proposal can follow


def _pack_key_text(cfg: RunConfig) -> str:
    from ...packed import pack_key  # here, not at the top: it imports torch, which readers of a store never need

    return pack_key(cfg)


class Store:
    FILE = FILE

    def __init__(self, url: str | Path, sweep: str | None = None):
        """Open the database at `url` (a store URL, or the path of a SQLite file) on the sweep
        named `sweep`, or on its only sweep. A database without sweeps is opened for
        `create_sweep`. Raises StoreError (one line, password redacted) when it cannot."""
        self.url = parse(str(url))
        self.shown = redact(self.url)
        self.dialect = DIALECTS[self.url.get_backend_name()]
        self._local = threading.local()
        self.engine = self.dialect.make_engine(self.url, self._local)
        # The hot statements (a claim, a heartbeat), built once: building one costs more than running it.
        ids = bindparam("ids", expanding=True)
        self._beat = update(runs).where(runs.c.id.in_(ids)).values(heartbeat=self.dialect.now())
        now = self.dialect.now()  # one value for a whole pack: its members share their start
        _claim = update(runs).where(runs.c.id.in_(ids))
        _claim = _claim.values(status="running", worker=bindparam("worker"), host=bindparam("host"), heartbeat=now)
        self._claim = _claim.values(started=now).returning(*runs.c)
        try:
            with self._read() as conn:
                conn.execute(select(1))
        except OperationalError as e:
            self.engine.dispose()
            why = (str(e.orig).strip().splitlines() or [type(e).__name__])[0]
            if self.url.password:
                why = why.replace(self.url.password, "***")
            raise StoreError(f"cannot open the store {self.shown}: {why}") from None
        self.sweep_id: int | None = None
        names = self.sweep_names()
        if sweep is not None:
            if sweep not in names:
                held = ", ".join(names) or "no sweeps"
                self.close()
                raise StoreError(f"the store {self.shown} holds no sweep named {sweep!r} (it holds: {held})")
            self.sweep_id = self._sweep_id(sweep)
        elif len(names) == 1:
            self.sweep_id = self._sweep_id(names[0])
        elif len(names) > 1:
            self.close()
            raise StoreError(f"the store {self.shown} holds several sweeps ({', '.join(names)}); pass --sweep NAME")

    @classmethod
    def in_dir(cls, directory: str | Path, sweep: str | None = None) -> Store:
        return cls(Path(directory) / FILE, sweep)

    def close(self) -> None:
        self.engine.dispose()

    # --- connections ------------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction, or the one `exclusive` holds on this thread."""
        if (conn := getattr(self._local, "conn", None)) is not None:
            yield conn
            return
        self._local.writing = True
        try:
            with self.engine.begin() as conn:
                self._local.writing = False
                yield conn
        finally:
            self._local.writing = False

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        if (conn := getattr(self._local, "conn", None)) is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """The sweep-wide lock under which proposals are added and lost runs reaped: two
        processes (on any hosts) never do either at once. Store calls inside share its transaction."""
        with self._write() as conn:
            self.dialect.lock(conn, self.sweep_id)
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def now(self) -> float:
        """The database's clock, in seconds since the epoch."""
        with self._read() as conn:
            return conn.execute(select(self.dialect.now())).scalar_one()

    # --- sweeps -----------------------------------------------------------------------------------
    def sweep_names(self) -> list[str]:
        with self._read() as conn:
            if not inspect(conn).has_table(sweeps.name):  # a database no sweep was created in yet
                return []
            return list(conn.execute(select(sweeps.c.name).order_by(sweeps.c.id)).scalars())

    def _sweep_id(self, name: str) -> int:
        with self._read() as conn:
            return conn.execute(select(sweeps.c.id).where(sweeps.c.name == name)).scalar_one()

    def create_sweep(self, name: str, config: dict, repeats: int = 1, order: str = "file", seed: int = 0) -> None:
        row = {"name": name, "config": json.dumps(config), "repeats": repeats, "run_order": order, "seed": seed}
        try:
            with self._write() as conn:
                self.dialect.lock(conn, 0)  # two first sweeps of a database must not race to create its tables
                metadata.create_all(conn)
                self.sweep_id = conn.execute(
                    insert(sweeps).values(**row, closed=False, created=self.dialect.now())
                ).inserted_primary_key[0]
        except IntegrityError:
            raise StoreError(f"the store {self.shown} already holds a sweep named {name!r}") from None

    @property
    def info(self) -> SweepInfo:
        with self._read() as conn:
            r = conn.execute(select(sweeps).where(sweeps.c.id == self._sid)).one()
        return SweepInfo(
            r.id, r.name, json.loads(r.config), r.repeats, r.run_order, r.seed, r.grid_size, r.budget, r.closed
        )

    @property
    def _sid(self) -> int:
        if self.sweep_id is None:
            raise StoreError(f"the store {self.shown} holds no sweep yet; create one with fcn-sweep sweep FILE")
        return self.sweep_id

    def _set(self, **fields) -> None:
        with self._write() as conn:
            conn.execute(update(sweeps).where(sweeps.c.id == self._sid).values(**fields))

    def set_grid_size(self, n: int) -> None:
        self._set(grid_size=n)

    def set_budget(self, n: int | None) -> None:
        self._set(budget=n)

    def set_closed(self, closed: bool) -> None:
        self._set(closed=closed)

    def add_invocation(self, started: float, ended: float, workers: int, pack: int) -> None:
        with self._write() as conn:
            conn.execute(
                insert(invocations).values(sweep_id=self._sid, started=started, ended=ended, workers=workers, pack=pack)
            )

    def invocations(self) -> list[dict]:
        cols = (invocations.c.started, invocations.c.ended, invocations.c.workers, invocations.c.pack)
        with self._read() as conn:
            rows = conn.execute(select(*cols).where(invocations.c.sweep_id == self._sid).order_by(invocations.c.id))
            return [dict(r._mapping) for r in rows]

    # --- proposals and claims ---------------------------------------------------------------------
    def add(self, rows: Iterable[tuple[str, int, int, int, RunConfig, dict]]) -> None:
        """(id, slot, proposal, repeat, config, params) rows, pending."""
        values = [
            {"id": i, "sweep_id": self._sid, "slot": s, "proposal": p, "repeat": r, "config": json.dumps(c.to_dict()),
             "params": json.dumps(params), "pack_key": _pack_key_text(c), "subset": c.subset, "status": "pending",
             "should_stop": False, "epoch": 0}
            for i, s, p, r, c, params in rows
        ]  # fmt: skip
        if not values:
            return
        with self._write() as conn:
            now = conn.execute(select(self.dialect.now())).scalar_one()
            conn.execute(insert(runs), [{**v, "created": now} for v in values])

    def budget_spent(self) -> bool:
        """Whether this invocation's `--count` of claims is used up (no budget: never)."""
        budget = self.info.budget
        return budget is not None and budget <= 0

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

    def heartbeat(self, run_ids: list[str]) -> set[str]:
        """Records that the runs (a worker's claim) are alive, in one write; returns those asked to stop."""
        with self._write() as conn:
            conn.execute(self._beat, {"ids": run_ids})
            return set(conn.execute(_STOP_REQUESTED, {"ids": run_ids}).scalars())

    def log_epoch(self, run_id: str, epoch_metrics: dict) -> None:
        epoch = epoch_metrics["epoch"]
        with self._write() as conn:
            conn.execute(delete(metrics).where(metrics.c.run_id == run_id, metrics.c.epoch == epoch))
            conn.execute(
                insert(metrics).values(run_id=run_id, epoch=epoch, data=json.dumps(epoch_metrics, allow_nan=False))
            )
            conn.execute(update(runs).where(runs.c.id == run_id).values(epoch=epoch, heartbeat=self.dialect.now()))

    def set_run_dir(self, run_id: str, run_dir: str) -> None:
        with self._write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(run_dir=run_dir))

    def finish(self, run_id: str, status: str, summary: dict, stop_reason: str | None = None) -> None:
        assert status in STATUSES, status
        with self._write() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    status=status,
                    summary=json.dumps(summary, allow_nan=False),
                    stop_reason=stop_reason,
                    ended=self.dialect.now(),
                )
            )

    def request_stop(self, run_ids: Iterable[str]) -> None:
        ids = list(run_ids)
        if ids:
            with self._write() as conn:
                conn.execute(
                    update(runs).where(runs.c.id.in_(ids), runs.c.status == "running").values(should_stop=True)
                )

    def requeue(self, run_ids: Iterable[str], new_ids: Iterable[str], status: str, reason: str) -> None:
        """End these attempts as `status` and give each slot a fresh pending attempt with the same config."""
        pairs = list(zip(run_ids, new_ids, strict=True))
        if not pairs:
            return
        with self._write() as conn:
            now = conn.execute(select(self.dialect.now())).scalar_one()
            old = {r.id: r for r in conn.execute(select(runs).where(runs.c.id.in_([o for o, _ in pairs])))}
            conn.execute(
                update(runs).where(runs.c.id.in_(list(old))).values(status=status, stop_reason=reason, ended=now)
            )
            keep = ("sweep_id", "slot", "proposal", "repeat", "config", "params", "pack_key", "subset")
            fresh = [
                {**{k: getattr(old[o], k) for k in keep}, "id": n, "status": "pending", "should_stop": False,
                 "epoch": 0, "created": now}
                for o, n in pairs
            ]  # fmt: skip
            conn.execute(insert(runs), fresh)

    def reap(self, stale_s: float, gone: Callable[[StoredRun], bool], new_id: Callable[[], str]) -> list[str]:
        """Under the sweep lock, re-queue running attempts whose worker is lost: silent for
        `stale_s` on the database's clock, or `gone` (a process of this host that no longer exists)."""
        with self.exclusive():
            now = self.now()
            lost = [r.id for r in self.runs(["running"]) if (r.heartbeat or 0) < now - stale_s or gone(r)]
            self.requeue(lost, [new_id() for _ in lost], "crashed", "lost")
        return lost

    # --- reads ------------------------------------------------------------------------------------
    def get_run(self, run_id: str) -> StoredRun:
        with self._read() as conn:
            return StoredRun.from_row(conn.execute(select(runs).where(runs.c.id == run_id)).one())

    def runs(self, statuses: Iterable[str] = STATUSES, ended_since: float | None = None) -> list[StoredRun]:
        """Attempts in these statuses, in sweep order; with `ended_since`, only those that ended at or
        after that time (the database's clock, as `now()`), so a poller reads what is new, not the sweep."""
        q = select(runs).where(runs.c.sweep_id == self._sid, runs.c.status.in_(tuple(statuses)))
        if ended_since is not None:
            q = q.where(runs.c.ended >= ended_since)
        q = q.order_by(runs.c.slot, runs.c.created)
        with self._read() as conn:
            return [StoredRun.from_row(r) for r in conn.execute(q)]

    def done_runs(self) -> list[StoredRun]:
        """Attempts that ended for good (see DONE)."""
        q = select(runs).where(runs.c.sweep_id == self._sid, DONE).order_by(runs.c.slot, runs.c.created)
        with self._read() as conn:
            return [StoredRun.from_row(r) for r in conn.execute(q)]

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

    def last_epoch(self, run_id: str) -> dict | None:
        q = select(metrics.c.data).where(metrics.c.run_id == run_id).order_by(metrics.c.epoch.desc()).limit(1)
        with self._read() as conn:
            data = conn.execute(q).scalar()
        return json.loads(data) if data else None

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

    def pending_subsets(self) -> list[int]:
        """The distinct training subsets of the pending runs (a worker loads their data up front)."""
        q = select(runs.c.subset).distinct().where(runs.c.sweep_id == self._sid, runs.c.status == "pending")
        with self._read() as conn:
            return sorted(conn.execute(q).scalars())

    def counts(self) -> dict[str, int]:
        q = select(runs.c.status, func.count()).where(runs.c.sweep_id == self._sid).group_by(runs.c.status)
        with self._read() as conn:
            return {**dict.fromkeys(STATUSES, 0), **dict(conn.execute(q).all())}

    def n_proposals(self) -> int:
        q = select(func.count(distinct(runs.c.proposal))).where(runs.c.sweep_id == self._sid)
        with self._read() as conn:
            return conn.execute(q).scalar_one()

    def slots(self) -> tuple[int, int]:
        """(slots done for good, slots known)."""
        mine = runs.c.sweep_id == self._sid
        with self._read() as conn:
            done = conn.execute(select(func.count(distinct(runs.c.slot))).where(mine, DONE)).scalar_one()
            total = conn.execute(select(func.count(distinct(runs.c.slot))).where(mine)).scalar_one()
        return done, total

    def best(self) -> StoredRun | None:
        scored = [r for r in self.runs(FINAL) if r.summary.get("best_val_acc") is not None]
        return max(scored, key=lambda r: r.summary["best_val_acc"], default=None)
