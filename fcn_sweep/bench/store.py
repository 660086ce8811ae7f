"""`fcn-sweep bench store`: what the sweep store and the controller cost, on SQLite and PostgreSQL
side by side: planning the study's 5,832-run grid (engine enumeration + store insert), one claim
and one pack-of-8 claim with 5,000 pending, 16 concurrent claimer processes draining 2,000 runs
(each exactly once, and the rate they reach together), and for bayes, proposing one run given N
finished ones. No thresholds.

    fcn-sweep bench store [--store postgresql://USER@HOST:PORT/DB]

Without --store it starts a throwaway PostgreSQL server with scripts/postgres_local.sh (as the
`postgres` user when run as root) and removes it after. Each measurement returns its line; the
command prints them as they come (the whole takes minutes).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text

from ..config import RunConfig
from ..sweep.controller import Controller
from ..sweep.store import Store

REPO = Path(__file__).resolve().parents[2]
CLAIMERS, CLAIMED_RUNS = 16, 2000


class NoServer(RuntimeError):
    """No PostgreSQL to measure on: the message says what to give instead."""


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    script = REPO / "scripts" / "postgres_local.sh"
    if not script.is_file() or not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        raise NoServer(
            "no local PostgreSQL to start (scripts/postgres_local.sh and Debian's postgresql); give --store URL"
        )
    root = Path(tempfile.mkdtemp(prefix="fcn-bench-pg-"))
    root.chmod(0o777)
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [*as_server, str(script), str(root / "pg"), "--port", str(port)]
        url = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        user = url.split("://", 1)[1].split("@", 1)[0]
        password = (root / "pg" / "password").read_text().strip()
        yield url.replace(f"://{user}@", f"://{user}:{password}@")
    finally:
        if (root / "pg" / "data").is_dir():
            pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
            stop = [*as_server, str(pg_ctl), "-D", str(root / "pg" / "data"), "-m", "fast", "stop"]
            subprocess.run(stop, check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


class Databases:
    """A fresh, empty store per measurement: a SQLite file, or a new PostgreSQL database."""

    def __init__(self, pg_url: str, tmp: Path):
        self.pg_url, self.tmp = pg_url, tmp

    def fresh(self, backend: str) -> str:
        name = "bench_" + secrets.token_hex(4)
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / name}.db"
        admin = create_engine(
            self.pg_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        return self.pg_url.rsplit("/", 1)[0] + "/" + name


def new_store(url: str, sweep: dict, **options) -> Store:
    store = Store(url)
    store.create_sweep("bench", sweep, **options)
    return store


def grid(dbs: Databases, backend: str) -> str:
    sweep = yaml.safe_load((REPO / "sweeps" / "grid.yaml").read_text())
    store = new_store(dbs.fresh(backend), sweep, order="random")
    t = time.perf_counter()
    with store.exclusive():
        Controller(store).plan()
    plan_s = time.perf_counter() - t
    n = store.counts()["pending"]
    store.close()
    return f"{backend:10s} grid: {n} slots planned in {plan_s:.2f} s ({1e3 * plan_s / n:.3f} ms a slot)"


def claims(dbs: Databases, backend: str) -> str:
    store = new_store(dbs.fresh(backend), {"method": "grid"})
    shapes = [(64,), (128,), (256, 64), (512, 128)]
    store.add((f"r{i}", i, i, 0, RunConfig(hidden=shapes[i % 4], seed=i), {}) for i in range(5000 + 100 * 9))
    per = {}
    for pack, n in ((1, 100), (8, 100)):
        t = time.perf_counter()
        for _ in range(n):
            got = store.claim_many("bench", pack)
        per[pack] = (time.perf_counter() - t) / n
        assert len(got) == pack
    left = store.counts()["pending"]
    store.close()
    return (
        f"{backend:10s} claim with >={left} pending: one run {1e3 * per[1]:.2f} ms, a pack of 8 {1e3 * per[8]:.2f} ms"
    )


def _claimer(url: str, name: str, start, out) -> None:
    store = Store(url)
    start.wait(timeout=120)
    got = []
    while claimed := store.claim_many(name, 1):
        got.append(claimed[0].id)
    out.put((got, time.time()))


def concurrent(dbs: Databases, backend: str) -> str:
    url = dbs.fresh(backend)
    store = new_store(url, {"method": "grid"})
    store.add((f"r{i}", i, i, 0, RunConfig(), {}) for i in range(CLAIMED_RUNS))
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(CLAIMERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"c{i}", start, out)) for i in range(CLAIMERS)]
    for p in procs:
        p.start()
    start.wait(timeout=300)
    t0 = time.time()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    flat = [i for got, _ in results for i in got]
    elapsed = max(end for _, end in results) - t0
    once = sorted(flat) == sorted(f"r{i}" for i in range(CLAIMED_RUNS))
    busy = sum(1 for got, _ in results if got)
    store.close()
    return (
        f"{backend:10s} {CLAIMERS} claimer processes, {CLAIMED_RUNS} runs: "
        f"{'each claimed exactly once' if once else 'DUPLICATES OR LOSSES'} ({len(flat)} claims, {busy} processes "
        f"got some) in {elapsed:.2f} s = {len(flat) / elapsed:.0f} claims/s together"
    )


def bayes(dbs: Databases, backend: str, finished: int) -> str:
    sweep = yaml.safe_load((REPO / "sweeps" / "bayes.yaml").read_text())
    rng = random.Random(0)
    store = new_store(dbs.fresh(backend), sweep)
    ctl = Controller(store)
    ctl.top_up(finished)
    while claimed := store.claim_many("bench", finished):
        for r in claimed:
            store.finish(r.id, "finished", {"best_val_acc": rng.uniform(0.8, 0.9)})
    t = time.perf_counter()
    with store.exclusive():
        ctl.top_up(1)
    took = time.perf_counter() - t
    store.close()
    return f"{backend:10s} bayes: one proposal with {finished} finished runs: {1e3 * took:.0f} ms"


def bench_store(store: str | None = None) -> Iterator[str]:
    """Each measurement's line, SQLite then PostgreSQL, on scratch databases of `store` (a
    PostgreSQL URL) or of a throwaway server; everything made is removed after."""
    # One-off imports (the engine's scipy, torch for pack keys) are not a cost of either backend.
    from .. import packed  # noqa: F401
    from ..sweep.spec import engine

    engine()
    with tempfile.TemporaryDirectory(prefix="fcn-sweep-bench-store-") as tmp:
        server = throwaway_postgres() if store is None else contextmanager(lambda: iter([store]))()
        with server as pg_url:
            dbs = Databases(pg_url, Path(tmp))
            for measure in (grid, claims, concurrent):
                for backend in ("sqlite", "postgresql"):
                    yield measure(dbs, backend)
            for n in (10, 100):
                for backend in ("sqlite", "postgresql"):
                    yield bayes(dbs, backend, n)
