"""The sweep's single source of truth: one SQLite database (WAL mode) per sweep directory.

Every process of a sweep opens the same file: the controller writes proposals and stop requests,
workers claim runs and write their epochs and summaries, `fcn-sweep status` and the report read.
A claim is one `BEGIN IMMEDIATE` transaction, so two workers starting at the same moment can never
take the same run. A row is one attempt at one *slot* (a proposed config and, with `--repeats`, one
of its seeds); a crashed attempt gets a fresh row for the same slot, so finished attempts are never
touched again.

Tables:
  meta(key, value)            the sweep config (JSON) and the controller's flags
  runs(id, slot, proposal, repeat, config, params, state, stop_reason, should_stop, worker,
       heartbeat, created, started, ended, epoch, summary, run_dir)
       state: pending | running | finished | diverged | stopped | crashed
       config: the full RunConfig as JSON; params: only the swept values, as the engine proposed them
  metrics(run_id, epoch, data)  one JSON object per epoch, exactly what the run directory holds
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig

STATES = ("pending", "running", "finished", "diverged", "stopped", "crashed")
FINAL = ("finished", "diverged", "stopped")
# A slot is done for good once an attempt ended in a final state, unless it was only interrupted
# (Ctrl-C): such an attempt always has a fresh pending attempt behind it.
DONE = "(state IN ('finished', 'diverged') OR (state = 'stopped' AND IFNULL(stop_reason, '') != 'interrupted'))"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    slot INTEGER NOT NULL,
    proposal INTEGER NOT NULL,
    repeat INTEGER NOT NULL,
    config TEXT NOT NULL,
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    stop_reason TEXT,
    should_stop INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat REAL,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    epoch INTEGER NOT NULL DEFAULT 0,
    summary TEXT,
    run_dir TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_state ON runs (state, slot);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs (id),
    epoch INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
"""


@dataclass(frozen=True)
class Run:
    id: str
    slot: int
    proposal: int
    repeat: int
    config: RunConfig
    params: dict[str, Any]
    state: str
    stop_reason: str | None
    worker: str | None
    heartbeat: float | None
    started: float | None
    ended: float | None
    epoch: int
    summary: dict[str, Any]
    run_dir: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Run:
        return cls(
            id=row["id"], slot=row["slot"], proposal=row["proposal"], repeat=row["repeat"],
            config=RunConfig.from_dict(json.loads(row["config"])), params=json.loads(row["params"]),
            state=row["state"], stop_reason=row["stop_reason"], worker=row["worker"], heartbeat=row["heartbeat"],
            started=row["started"], ended=row["ended"], epoch=row["epoch"],
            summary=json.loads(row["summary"]) if row["summary"] else {}, run_dir=row["run_dir"],
        )  # fmt: skip


class Store:
    FILE = "sweep.db"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Autocommit; transactions are explicit where they matter (claims). A long busy timeout,
        # because several workers write small rows at once and waiting is always right here.
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, directory: str | Path) -> Store:
        return cls(Path(directory) / cls.FILE)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row["value"]) if row else default

    def set(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # --- proposals and claims ---------------------------------------------------------------------
    def add(self, rows: Iterable[tuple[str, int, int, int, RunConfig, dict]]) -> None:
        """(id, slot, proposal, repeat, config, params) rows, pending."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO runs (id, slot, proposal, repeat, config, params, state, created) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(i, s, p, r, json.dumps(c.to_dict()), json.dumps(params), now) for i, s, p, r, c, params in rows],
            )

    def budget_spent(self) -> bool:
        """Whether this invocation's `--count` of claims is used up (no budget: never)."""
        budget = self.get("budget")
        return budget is not None and budget <= 0

    def claim(self, worker: str) -> Run | None:
        """The next pending run, now running under `worker`; None when nothing is pending or the
        sweep's claim budget (`--count`) is spent."""
        return next(iter(self.claim_many(worker, 1)), None)

    def claim_many(self, worker: str, limit: int, key: Callable[[dict], Hashable] = lambda config: None) -> list[Run]:
        """The next pending run and up to `limit - 1` more pending runs whose config (as a dict) has
        the same `key`, in sweep order, all now running under `worker`: a pack (`--pack`). Fewer when
        fewer match or the claim budget runs out; empty when nothing is pending."""
        with self.transaction() as db:
            budget = self.get("budget")
            limit = limit if budget is None else min(limit, budget)
            if limit <= 0:
                return []
            rows = db.execute("SELECT id, config FROM runs WHERE state = 'pending' ORDER BY slot, created")
            ids, want = [], None
            for row in rows:
                k = key(json.loads(row["config"]))
                if not ids:
                    want = k
                if k == want:
                    ids.append(row["id"])
                    if len(ids) == limit:
                        break
            rows.close()
            now = time.time()
            db.executemany(
                "UPDATE runs SET state = 'running', worker = ?, heartbeat = ?, started = ? WHERE id = ?",
                [(worker, now, now, i) for i in ids],
            )
            if budget is not None:
                self.set("budget", budget - len(ids))
        return [self.run(i) for i in ids]

    def heartbeat(self, run_ids: list[str]) -> set[str]:
        """Records that the runs (a worker's claim) are alive, in one write; returns those asked to stop."""
        marks = ",".join("?" * len(run_ids))
        self.db.execute(f"UPDATE runs SET heartbeat = ? WHERE id IN ({marks})", (time.time(), *run_ids))
        rows = self.db.execute(f"SELECT id FROM runs WHERE should_stop = 1 AND id IN ({marks})", run_ids)
        return {r["id"] for r in rows}

    def log_epoch(self, run_id: str, metrics: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO metrics (run_id, epoch, data) VALUES (?, ?, ?)",
                (run_id, metrics["epoch"], json.dumps(metrics, allow_nan=False)),
            )
            db.execute("UPDATE runs SET epoch = ?, heartbeat = ? WHERE id = ?", (metrics["epoch"], time.time(), run_id))

    def set_run_dir(self, run_id: str, run_dir: str) -> None:
        self.db.execute("UPDATE runs SET run_dir = ? WHERE id = ?", (run_dir, run_id))

    def finish(self, run_id: str, state: str, summary: dict, stop_reason: str | None = None) -> None:
        assert state in STATES, state
        self.db.execute(
            "UPDATE runs SET state = ?, summary = ?, stop_reason = ?, ended = ? WHERE id = ?",
            (state, json.dumps(summary, allow_nan=False), stop_reason, time.time(), run_id),
        )

    def request_stop(self, run_ids: Iterable[str]) -> None:
        self.db.executemany(
            "UPDATE runs SET should_stop = 1 WHERE id = ? AND state = 'running'", [(i,) for i in run_ids]
        )

    def requeue(self, run_ids: Iterable[str], new_ids: Iterable[str], state: str, reason: str) -> None:
        """End these attempts as `state` and give each slot a fresh pending attempt with the same config."""
        now = time.time()
        with self.transaction() as db:
            for old, new in zip(run_ids, new_ids, strict=True):
                row = db.execute("SELECT * FROM runs WHERE id = ?", (old,)).fetchone()
                db.execute(
                    "UPDATE runs SET state = ?, stop_reason = ?, ended = ? WHERE id = ?", (state, reason, now, old)
                )
                db.execute(
                    "INSERT INTO runs (id, slot, proposal, repeat, config, params, state, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                    (new, row["slot"], row["proposal"], row["repeat"], row["config"], row["params"], now),
                )

    # --- reads ------------------------------------------------------------------------------------
    def run(self, run_id: str) -> Run:
        return Run.from_row(self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def runs(self, states: Iterable[str] = STATES) -> list[Run]:
        states = tuple(states)
        marks = ",".join("?" * len(states))
        rows = self.db.execute(f"SELECT * FROM runs WHERE state IN ({marks}) ORDER BY slot, created", states)
        return [Run.from_row(r) for r in rows]

    def history(self, run_id: str) -> list[dict]:
        rows = self.db.execute("SELECT data FROM metrics WHERE run_id = ? ORDER BY epoch", (run_id,))
        return [json.loads(r["data"]) for r in rows]

    def histories(self, run_ids: Iterable[str]) -> dict[str, list[dict]]:
        ids = tuple(run_ids)
        out: dict[str, list[dict]] = {i: [] for i in ids}
        if ids:
            marks = ",".join("?" * len(ids))
            q = f"SELECT run_id, data FROM metrics WHERE run_id IN ({marks}) ORDER BY run_id, epoch"
            for r in self.db.execute(q, ids):
                out[r["run_id"]].append(json.loads(r["data"]))
        return out

    def pending_subsets(self) -> list[int]:
        """The distinct training subsets of the pending runs (a worker loads their data up front)."""
        rows = self.db.execute("SELECT DISTINCT json_extract(config, '$.subset') FROM runs WHERE state = 'pending'")
        return sorted(r[0] for r in rows)

    def counts(self) -> dict[str, int]:
        rows = self.db.execute("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
        return {**dict.fromkeys(STATES, 0), **{r["state"]: r["n"] for r in rows}}

    def slots(self) -> tuple[int, int]:
        """(slots done for good, slots known)."""
        done = self.db.execute(f"SELECT COUNT(DISTINCT slot) FROM runs WHERE {DONE}").fetchone()[0]
        total = self.db.execute("SELECT COUNT(DISTINCT slot) FROM runs").fetchone()[0]
        return done, total

    def best(self) -> Run | None:
        rows = self.runs(FINAL)
        scored = [r for r in rows if r.summary.get("best_val_acc") is not None]
        return max(scored, key=lambda r: r.summary["best_val_acc"], default=None)
