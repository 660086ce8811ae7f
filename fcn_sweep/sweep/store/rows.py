"""The values of the store's tables as the rest of the package sees them: the run states, and one
attempt (StoredRun) or sweep (SweepInfo) as typed values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_

from ...config import RunConfig
from .schema import runs

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
