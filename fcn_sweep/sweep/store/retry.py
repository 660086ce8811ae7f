"""Which store errors are a blip, and how long a store call waits one out.

A shared database goes away now and then: a restart (`pg_ctl restart`), an administrator or a
pooler ending connections (`pg_terminate_backend`), a firewall's idle timeout, a serialization
failure between two writers, SQLite's "database is locked". None of these says anything about the
call that met it: the same call on a fresh connection (the pool pings a connection before handing
it out) succeeds once the database is back. So every store call is retried, with backoff, for a
window (FCN_SWEEP_STORE_RETRY_S seconds, default 300), and only then fails as StoreUnavailable.

What is not a blip fails at once: a wrong password, a database or table that does not exist, a
constraint violated. Opening a store does not wait either (Store.__init__): a URL typed wrong is
said at once, not after minutes.
"""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError

from .url import StoreError

WINDOW_ENV = "FCN_SWEEP_STORE_RETRY_S"
EXIT_STORE = 75  # EX_TEMPFAIL: a command ended because the store stayed away past the window; start it again later
WINDOW_S = 300.0
FIRST_WAIT_S, LONGEST_WAIT_S = 0.05, 5.0

# SQLSTATEs of a blip: serialization failure, deadlock, administrator/crash shutdown, server
# starting up; class 08 (connection exceptions) is matched by its prefix.
TRANSIENT_STATES = {"40001", "40P01", "57P01", "57P02", "57P03"}
# A connection refused or broken says nothing about what; these say the store is wrong, not away.
PERMANENT_WORDS = ("password", "authentication", "does not exist", "permission denied", "role ")

T = TypeVar("T")


class StoreUnavailable(StoreError):
    """The store stayed away for the whole retry window; one line, password redacted."""


def window_s() -> float:
    """The retry window from the environment; a value that is not a number of seconds is refused."""
    text = os.environ.get(WINDOW_ENV)
    if not text:
        return WINDOW_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise StoreError(f"{WINDOW_ENV}={text!r} is not a number of seconds; give e.g. {WINDOW_ENV}=300")
    return value


def transient(error: BaseException) -> bool:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    orig = error.orig if isinstance(error, DBAPIError) else error
    if isinstance(orig, sqlite3.OperationalError):
        return any(w in str(orig) for w in ("locked", "busy"))
    if isinstance(orig, psycopg.Error):
        state = orig.sqlstate or ""
        if state in TRANSIENT_STATES or state.startswith("08"):
            return True
        if not state and isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError)):
            # No SQLSTATE: libpq's own connection failures (refused, reset, server closed the connection).
            return not any(w in str(orig).lower() for w in PERMANENT_WORDS)
    return False


def first_line(error: BaseException) -> str:
    orig = error.orig if isinstance(error, DBAPIError) else error
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]


def retry(call: Callable[[], T], window: float, shown: str, password: str | None) -> T:
    """`call()`, again after each transient error, with a growing wait, until it succeeds or
    `window` seconds have passed since the first error (then StoreUnavailable)."""
    began, wait = None, FIRST_WAIT_S
    while True:
        try:
            return call()
        except DBAPIError as e:
            if not transient(e):
                raise
            now = time.monotonic()
            began = now if began is None else began
            if now - began >= window:
                why = first_line(e).replace(password, "***") if password else first_line(e)
                raise StoreUnavailable(
                    f"the store {shown} was unreachable for {now - began:.0f} s ({WINDOW_ENV}={window:g}): {why}"
                ) from None
            time.sleep(min(wait, max(0.0, began + window - now)) * random.uniform(0.75, 1.25))
            wait = min(wait * 2, LONGEST_WAIT_S)


def retried(method: Callable[..., T]) -> Callable[..., T]:
    """A Store method that waits out blips (Store.retry). Inside `Store.exclusive` it is not retried
    on its own: the transaction it shares is gone with the connection, so the whole block is retried."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if getattr(self._local, "conn", None) is not None:
            return method(self, *args, **kwargs)
        return self.retry(lambda: method(self, *args, **kwargs))

    return call
