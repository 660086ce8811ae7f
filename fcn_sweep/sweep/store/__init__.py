"""The sweep store: one interface (store.Store), SQLite and PostgreSQL behind it; all SQL lives in
this package, and what differs between the two databases is said once, in dialects."""

from .attempts import Beat, Taken
from .retry import EXIT_STORE, WINDOW_ENV, StoreUnavailable
from .store import DONE, FILE, FINAL, STATUSES, Store, StoredRun, SweepInfo
from .url import ENV, StoreError, parse, redact, redact_text, without_password

__all__ = [
    "DONE", "ENV", "EXIT_STORE", "FILE", "FINAL", "STATUSES", "WINDOW_ENV", "Beat", "Store", "StoreError",
    "StoreUnavailable", "StoredRun", "SweepInfo", "Taken", "parse", "redact", "redact_text", "without_password",
]  # fmt: skip
