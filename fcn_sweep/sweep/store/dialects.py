"""Everything that differs between SQLite and PostgreSQL, in one place. The queries are the same
for both (SQLAlchemy Core); what differs is how an engine is made, how a write transaction begins,
what holds the sweep-wide lock, and which clock `now` reads.

- Claims: a claim selects pending rows `FOR UPDATE SKIP LOCKED` and marks them running in one
  transaction. PostgreSQL locks the selected rows, and a concurrent claimer skips them instead of
  waiting. SQLite has no row locks (SQLAlchemy drops the clause there); every write transaction
  there begins with `BEGIN IMMEDIATE`, which takes the database's one write lock up front, so two
  claimers are serialised before either reads.
- The proposer/reaper lock (`lock`): a transaction-scoped advisory lock on the sweep in PostgreSQL;
  on SQLite the write lock that `BEGIN IMMEDIATE` already holds.
- The clock (`now`): the database server's in PostgreSQL, so hosts whose clocks disagree still
  agree on heartbeats; SQLite is embedded, so its clock is this machine's, the only one there is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine, event, literal_column, text
from sqlalchemy.engine import URL
from sqlalchemy.sql.elements import ColumnElement

LOCK_CLASS = 0x6663  # "fc": the advisory locks of fcn-sweep, keyed by (class, sweep id)


@dataclass(frozen=True)
class Dialect:
    make_engine: Callable[[URL, threading.local], Engine]
    now: Callable[[], ColumnElement]
    lock: Callable[[Connection, int], None]  # holds until the transaction ends


def _sqlite_engine(url: URL, local: threading.local) -> Engine:
    # A long busy timeout, because several workers write small rows at once and waiting is always right here.
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun below, not by the driver
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
            dbapi_conn.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if getattr(local, "writing", False) else "BEGIN")

    return engine


def _postgresql_engine(url: URL, local: threading.local) -> Engine:
    return create_engine(
        url.set(drivername="postgresql+psycopg"),
        connect_args={"connect_timeout": 10},
        pool_size=2,
        max_overflow=4,
        # A pooled connection may have died with a restart or pg_terminate_backend: checked before each use.
        pool_pre_ping=True,
    )


def _pg_lock(conn: Connection, sweep_id: int) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(:c, :s)"), {"c": LOCK_CLASS, "s": sweep_id})


DIALECTS = {
    "sqlite": Dialect(
        make_engine=_sqlite_engine,
        now=lambda: literal_column("((julianday('now') - 2440587.5) * 86400.0)"),
        lock=lambda conn, sweep_id: None,
    ),
    "postgresql": Dialect(
        make_engine=_postgresql_engine,
        # statement_timestamp: one value for every row a statement touches, newer with each statement
        now=lambda: literal_column("(extract(epoch from statement_timestamp())::float8)"),
        lock=_pg_lock,
    ),
}
