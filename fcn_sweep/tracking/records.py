"""Run ids and strict JSON: how runs are named and how their records are written to disk."""

from __future__ import annotations

import json
import math
import secrets
import time
from pathlib import Path
from typing import Any


def new_run_id() -> str:
    """Sortable by start time, and unique even for thousands of ids made in one second (a grid's
    slots): 8 random base-36 characters, as W&B's own run ids."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return time.strftime("%Y%m%d-%H%M%S-") + "".join(secrets.choice(alphabet) for _ in range(8))


def jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities (a diverged run's loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    """Written to a temporary name and renamed, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
