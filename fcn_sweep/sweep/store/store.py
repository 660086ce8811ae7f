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
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, bindparam, insert, inspect, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError, OperationalError

from ...config import RunConfig
from . import retry as retry_mod
from .attempts import Attempts
from .dialects import DIALECTS
from .reads import Reads
from .retry import retried
from .rows import DONE, FILE, FINAL, STATUSES, StoredRun, SweepInfo
from .schema import invocations, launches, metadata, runs, sweeps
from .url import StoreError, parse, redact

__all__ = ["DONE", "FILE", "FINAL", "STATUSES", "Store", "StoredRun", "SweepInfo"]

T = TypeVar("T")


def _pack_key_text(cfg: RunConfig) -> str:
    from ...packed import pack_key  # here, not at the top: it imports torch, which readers of a store never need

    return pack_key(cfg)


class Store(Attempts, Reads):
    FILE = FILE

    def __init__(self, url: str | Path | URL, sweep: str | None = None, create: bool = True, wait: bool = False):
        """Open the database at `url` (a store URL, or the path of a SQLite file) on the sweep
        named `sweep`, or on its only sweep. A database without sweeps is opened for
        `create_sweep`; with `create=False` a SQLite file that does not exist is refused rather
        than made (a command that only reads or works a sweep). Raises StoreError (one line,
        password redacted) when it cannot. Opening waits out a blip only with `wait` (a worker process,
        whose store was found good when it was started): a URL typed wrong is said at once."""
        # A URL object as such: str() of one hides its password, which would then be lost.
        self.url = parse(url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url))
        self.shown = redact(self.url)
        self.window = retry_mod.window_s()
        if not create and self.url.get_backend_name() == "sqlite" and not Path(self.url.database).is_file():
            db = self.url.database or ""
            # sqlite:///tmp/x.db names the relative path tmp/x.db: the likeliest slip, so say so.
            hint = "" if Path(db).is_absolute() else f"; a path from / takes four slashes: sqlite:////{db}"
            raise StoreError(f"no store at {db} (no such file{hint}); fcn-sweep sweep FILE makes a sweep and its store")
        self.dialect = DIALECTS[self.url.get_backend_name()]
        self._local = threading.local()
        self.engine = self.dialect.make_engine(self.url, self._local)
        # The claim, built once: building one costs more than running it.
        ids = bindparam("ids", expanding=True)
        now = self.dialect.now()  # one value for a whole pack: its members share their start
        _claim = update(runs).where(runs.c.id.in_(ids))
        _claim = _claim.values(status="running", worker=bindparam("worker"), host=bindparam("host"), heartbeat=now)
        self._claim = _claim.values(started=now).returning(*runs.c)
        try:
            self.retry(self._ping) if wait else self._ping()
        except OperationalError as e:
            self.engine.dispose()
            why = retry_mod.first_line(e)
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

    def _ping(self) -> None:
        with self._read() as conn:
            conn.execute(select(1))

    @classmethod
    def in_dir(cls, directory: str | Path, sweep: str | None = None, create: bool = True) -> Store:
        return cls(Path(directory) / FILE, sweep, create)

    def close(self) -> None:
        self.engine.dispose()

    # --- waiting out a blip (see retry) ----------------------------------------------------------
    def retry(self, call: Callable[[], T]) -> T:
        """`call()` (store calls, or a block under `exclusive`), retried after each blip of the
        database for this thread's window (`patience`), else StoreUnavailable."""
        window = getattr(self._local, "window", None)
        return retry_mod.retry(call, self.window if window is None else window, self.shown, self.url.password)

    @contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Store calls on this thread wait out blips for `seconds` instead of the window: 0 for a
        call that had better be skipped than wait (a progress display, a heartbeat's single beat)."""
        before = getattr(self._local, "window", None)
        self._local.window = seconds
        try:
            yield
        finally:
            self._local.window = before

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

    @retried
    def now(self) -> float:
        """The database's clock, in seconds since the epoch."""
        with self._read() as conn:
            return conn.execute(select(self.dialect.now())).scalar_one()

    # --- sweeps -----------------------------------------------------------------------------------
    @retried
    def sweep_names(self) -> list[str]:
        with self._read() as conn:
            if not inspect(conn).has_table(sweeps.name):  # a database no sweep was created in yet
                return []
            return list(conn.execute(select(sweeps.c.name).order_by(sweeps.c.id)).scalars())

    @retried
    def _sweep_id(self, name: str) -> int:
        with self._read() as conn:
            return conn.execute(select(sweeps.c.id).where(sweeps.c.name == name)).scalar_one()

    @retried
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
    @retried
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

    @retried
    def _set(self, **fields) -> None:
        with self._write() as conn:
            conn.execute(update(sweeps).where(sweeps.c.id == self._sid).values(**fields))

    def set_grid_size(self, n: int) -> None:
        self._set(grid_size=n)

    def set_budget(self, n: int | None) -> None:
        self._set(budget=n)

    def set_closed(self, closed: bool) -> None:
        self._set(closed=closed)

    @retried
    def add_invocation(self, started: float, ended: float, workers: int, pack: int) -> None:
        with self._write() as conn:
            conn.execute(
                insert(invocations).values(sweep_id=self._sid, started=started, ended=ended, workers=workers, pack=pack)
            )

    @retried
    def invocations(self) -> list[dict]:
        cols = (invocations.c.started, invocations.c.ended, invocations.c.workers, invocations.c.pack)
        with self._read() as conn:
            rows = conn.execute(select(*cols).where(invocations.c.sweep_id == self._sid).order_by(invocations.c.id))
            return [dict(r._mapping) for r in rows]

    @retried
    def add_launch(self, job: str, logs: str) -> None:
        """A job array submitted for this sweep (its tasks' logs are where status looks for trouble)."""
        with self._write() as conn:
            launches.create(conn, checkfirst=True)  # stores made before launches were recorded lack it
            conn.execute(insert(launches).values(sweep_id=self._sid, job=job, logs=logs, submitted=self.dialect.now()))

    @retried
    def launches(self) -> list[dict]:
        with self._read() as conn:
            if not inspect(conn).has_table(launches.name):
                return []
            q = select(launches.c.job, launches.c.logs).where(launches.c.sweep_id == self._sid)
            return [dict(r._mapping) for r in conn.execute(q.order_by(launches.c.id))]

    # --- proposals and claims ---------------------------------------------------------------------
    @retried
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
