"""Store URLs: `sqlite:///path/sweep.db` or `postgresql://user@host:port/db` (a bare path is a
SQLite file). The password, when a URL carries one, is shown nowhere: every URL a user or a log
sees is `redact`ed."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

SCHEMES = ("sqlite", "postgresql")
DRIVERS = ("sqlite", "pysqlite", "postgresql", "psycopg")
ENV = "FCN_SWEEP_STORE"
USE = "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"


class StoreError(ValueError):
    """A store that cannot be used as asked; one line, password redacted."""


def parse(text: str) -> URL:
    if "://" not in text:
        return URL.create("sqlite", database=str(Path(text)))
    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreError(f"{redact_text(text)} is not a store URL; {USE}") from None
    if url.get_backend_name() not in SCHEMES or url.get_driver_name() not in DRIVERS:
        raise StoreError(f"unknown store scheme {url.drivername!r} in {redact(url)}; {USE}")
    if url.get_backend_name() == "sqlite" and not url.database:
        raise StoreError("a sqlite store URL needs a file: sqlite:///path/to/sweep.db")
    return url


def redact(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def without_password(url: URL) -> str:
    """The URL to show a user who must type it again (a worker line): PGPASSWORD or ~/.pgpass supply it."""
    bare = URL.create(url.drivername, url.username, None, url.host, url.port, url.database, url.query)
    return bare.render_as_string()


# `scheme://user:secret@`, anywhere in a text: what sits between `user:` and the last `@` before
# the host is hidden, whether or not the rest parses as a URL; also where a path collapsed the `//`
# (`postgresql:/user:secret@host`, a URL given where a directory goes).
_CREDENTIALS = re.compile(r"(\w[\w+.-]*:/{1,2}[^\s:/@'\"]*):[^\s'\"]*@")


def redact_text(text: str) -> str:
    """Any text (an error message, a URL typed wrong) with the password of every URL in it hidden."""
    return _CREDENTIALS.sub(r"\1:***@", text)
