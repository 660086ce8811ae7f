"""The tables, one definition for both backends. JSON is stored as text: both databases take it,
and nothing queries inside it (what a query filters on has its own column: `pack_key`, `subset`).

  sweeps       one row a sweep: its name, the sweep file as given, the options it was created with
               (repeats, order, seed), grid_size once planned, the claim budget of the running
               `fcn-sweep sweep` invocation (`--count`), and `closed` once no proposal can follow
  invocations  one row per `fcn-sweep sweep` run on record (for status's time accounting)
  runs         one row per attempt at one slot (a proposed config and, with --repeats, one of its
               seeds); a lost or interrupted attempt gets a fresh row for the same slot
  metrics      one JSON object per run and epoch, exactly what the run directory holds
  launches     one row per job array `fcn-sweep slurm workers` submitted: its job id and log folder,
               so that status can say when tasks could not work the sweep (made when first needed)

Every time is seconds since the epoch on the database's clock (dialects.now), never a host's.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

sweeps = Table(
    "sweeps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("config", Text, nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("run_order", String(20), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("grid_size", Integer),
    Column("budget", Integer),
    Column("closed", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
)

invocations = Table(
    "invocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sweep_id", Integer, ForeignKey("sweeps.id"), nullable=False),
    Column("started", Float, nullable=False),
    Column("ended", Float, nullable=False),
    Column("workers", Integer, nullable=False),
    Column("pack", Integer, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sweep_id", Integer, ForeignKey("sweeps.id"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("proposal", Integer, nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("config", Text, nullable=False),  # the full RunConfig
    Column("params", Text, nullable=False),  # only the swept values, as the engine proposed them
    Column("pack_key", Text, nullable=False),  # packed.pack_key of the config: runs a pack may share
    Column("subset", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("stop_reason", String(32)),
    Column("should_stop", Boolean, nullable=False, default=False),
    Column("worker", Text),  # name:pid@host of the process that claimed it
    Column("host", Text),
    Column("heartbeat", Float),
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    Column("epoch", Integer, nullable=False, default=0),
    Column("summary", Text),
    Column("run_dir", Text),  # on `host`
)
Index("runs_claim", runs.c.sweep_id, runs.c.status, runs.c.slot, runs.c.created)
Index("runs_pack", runs.c.sweep_id, runs.c.status, runs.c.pack_key, runs.c.slot)

launches = Table(
    "launches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("sweep_id", Integer, ForeignKey("sweeps.id"), nullable=False),
    Column("job", String(64), nullable=False),
    Column("logs", Text, nullable=False),
    Column("submitted", Float, nullable=False),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("data", Text, nullable=False),
)
