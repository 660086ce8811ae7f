"""One table of runs from any source a study can come from: a sweep's store (a sweep directory's
`sweep.db`, or a shared store named by URL) or a folder of run directories (`config.json`,
`metrics.jsonl`, `summary.json` each).

Both become the same `Study`: a list of `RunRecord`s plus the parameters that were swept. A
parameter counts as swept when the runs differ in it; `seed` never does, because seeds are the
repeats of one config: runs whose configs are equal apart from the seed, whether the seeds came
from `--repeats` or from a sweep file's `seed` values. So the same folder read either way gives the
same table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig
from ..sweep.store import FILE, STATUSES, Store, StoreError, redact
from .configs import REPEAT_AXIS, group_numbers

OBJECTIVE = "best_val_acc"  # the sweep objective as a run's summary holds it (max of val/acc)
# Attempts that are only a placeholder for a later attempt of the same slot, or not over yet:
# they are counted, but no number of theirs enters the analysis.
NOT_DONE = ("pending", "running")


class StudyError(ValueError):
    """Input that cannot be reported on; the message is one line a user can act on."""


@dataclass(frozen=True)
class RunRecord:
    id: str
    group: int  # runs sharing `group` are seeds of one config
    state: str  # the run's status: finished | diverged | stopped | crashed | running | pending
    stop_reason: str | None
    config: RunConfig
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path | None

    @property
    def objective(self) -> float | None:
        return self.summary.get(OBJECTIVE)

    @property
    def done(self) -> bool:
        """Counts in the analysis: a final state with a score (an interrupted attempt was re-run)."""
        return self.state not in NOT_DONE and self.stop_reason != "interrupted" and self.objective is not None

    @cached_property
    def _values(self) -> dict[str, Any]:
        return {}

    def value(self, name: str) -> Any:
        # asked for millions of times in a study of thousands of runs: each value labelled once
        found = self._values
        if name not in found:
            found[name] = axis_value(self.config, name)
        return found[name]


@dataclass(frozen=True)
class StoreSource:
    """A sweep in a store named by URL; shown (in the report too) with its password redacted."""

    url: Any  # sqlalchemy URL
    sweep: str

    def __str__(self) -> str:
        return f"{redact(self.url)} (sweep {self.sweep})"


def store_source(url: Any, sweep: str) -> StoreSource:
    return StoreSource(url, sweep)


@dataclass(frozen=True)
class Study:
    source: Path | StoreSource
    kind: str  # "sweep" | "run dirs"
    runs: list[RunRecord]
    swept: tuple[str, ...]
    counts: dict[str, int] = field(default_factory=dict)
    name: str = ""  # the sweep's name where known, else the folder's
    sweep: dict[str, Any] = field(default_factory=dict)  # the sweep file's config where known (a sweep dir)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.source.resolve().name)

    @cached_property
    def done(self) -> list[RunRecord]:
        """The runs that count (computed once: a study's runs do not change once loaded)."""
        return [r for r in self.runs if r.done]

    @cached_property
    def _by_id(self) -> dict[str, RunRecord]:
        return {r.id: r for r in self.runs}

    def run(self, run_id: str) -> RunRecord:
        """By full id, or by an unambiguous ending (the random hex part of an id is enough)."""
        if run_id in self._by_id:
            return self._by_id[run_id]
        matches = [r for r in self.runs if r.id.endswith(run_id)]
        if len(matches) != 1:
            why = "matches several runs" if matches else "is not a run of this study"
            raise StudyError(f"run id {run_id!r} {why}")
        return matches[0]


# --- parameter values as axes: a list is a poor axis, its label is a good one ----------------------
def _label(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return "-".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
    if isinstance(v, bool):
        return str(v).lower()
    return v


def axis_value(cfg: RunConfig, name: str) -> Any:
    """The value of one parameter as a scalar: `hidden` as its arch label (`1024-256`), per-layer
    dropout as `0.3-0.2`, booleans as `true`/`false`, numbers and names unchanged."""
    return _label(getattr(cfg, name))


def is_numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _order_key(cfg_value: Any) -> tuple:
    """Categorical values in an order a reader expects: architectures by depth then widths, the
    rest by name."""
    if isinstance(cfg_value, (list, tuple)):
        return (len(cfg_value), tuple(cfg_value))
    return (0, (str(cfg_value),))


def levels(study: Study, name: str, runs: list[RunRecord] | None = None) -> list[Any]:
    """The distinct axis values of a parameter, ordered (numbers ascending)."""
    seen: dict[Any, Any] = {}
    for r in study.runs if runs is None else runs:
        seen.setdefault(r.value(name), getattr(r.config, name))
    if is_numeric(list(seen)):
        return sorted(seen)
    return sorted(seen, key=lambda v: _order_key(seen[v]))


def swept_params(configs: list[RunConfig]) -> tuple[str, ...]:
    names = [f.name for f in fields(RunConfig) if f.name != REPEAT_AXIS]
    return tuple(n for n in names if len({json.dumps(axis_value(c, n)) for c in configs}) > 1)


# --- the two sources ------------------------------------------------------------------------------
def _find_run_dir(sweep_dir: Path | None, run_id: str, stored: str | None) -> Path | None:
    """A store's run_dir is a path on the host that trained the run; the sweep directory's own
    layout (`runs/<id>`) is the reliable place on this host, the stored path the fallback (found
    where it is reachable: this host, or a shared filesystem). None: the run is known from the
    store alone."""
    candidates = [sweep_dir / "runs" / run_id] if sweep_dir else []
    if stored:
        candidates += [Path(stored)] + ([sweep_dir / stored] if sweep_dir else [])
    return next((p for p in candidates if p.is_dir()), None)


def load_store(store: Store, source: Path | StoreSource, sweep_dir: Path | None) -> Study:
    try:
        rows = store.runs()
        histories = store.histories(r.id for r in rows)
        counts = store.counts()
        sweep, name = store.info.config, store.info.name
    finally:
        store.close()
    runs = [
        RunRecord(
            id=r.id, group=group, state=r.status, stop_reason=r.stop_reason, config=r.config,
            summary=r.summary, history=histories[r.id], run_dir=_find_run_dir(sweep_dir, r.id, r.run_dir),
        )
        for r, group in zip(rows, group_numbers([r.config for r in rows]), strict=True)
    ]  # fmt: skip
    return Study(source, "sweep", runs, swept_params([r.config for r in runs]), counts, name, sweep)


def load_sweep_dir(directory: Path) -> Study:
    return load_store(Store.in_dir(directory), directory, directory)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StudyError(f"cannot read {path}: {e}") from None


def _read_run_dir(path: Path) -> tuple[RunConfig, dict, list[dict]]:
    try:
        cfg = RunConfig.from_dict(_read_json(path / "config.json"))
    except ConfigError as e:
        raise StudyError(f"{path / 'config.json'}: {e}") from None
    summary_file = path / "summary.json"
    summary = _read_json(summary_file) if summary_file.is_file() else {}
    metrics = path / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    try:
        history = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as e:
        raise StudyError(f"cannot read {metrics}: {e}") from None
    return cfg, summary, history


def load_run_dirs(directory: Path) -> Study:
    paths = sorted(p for p in directory.iterdir() if (p / "config.json").is_file())
    read = [(p, *_read_run_dir(p)) for p in paths]
    runs = []
    for (path, cfg, summary, history), group in zip(read, group_numbers([c for _, c, *_ in read]), strict=True):
        # summary.json is written last: a run directory without one crashed or is still running.
        state = summary.get("status", "crashed")
        reason = summary.get("stop_reason") if summary else "no summary.json (crashed, or still running)"
        runs.append(RunRecord(path.name, group, state, reason, cfg, summary, history, path))
    counts = {**dict.fromkeys(STATUSES, 0), **Counter(r.state for r in runs)}
    return Study(directory, "run dirs", runs, swept_params([r.config for r in runs]), counts)


def load(directory: str | Path | StoreSource) -> Study:
    """The study in DIR: a sweep directory, or a folder whose subfolders are run directories; or
    a sweep in a store (StoreSource)."""
    if isinstance(directory, StoreSource):
        try:
            study = load_store(Store(directory.url, directory.sweep), directory, None)
        except StoreError as e:
            raise StudyError(str(e)) from None
        if not study.runs:
            raise StudyError(f"{directory} holds no runs yet")
        return study
    d = Path(directory)
    if not d.is_dir():
        raise StudyError(f"{d} is not a directory")
    if (d / FILE).is_file():
        study = load_sweep_dir(d)
    elif any((p / "config.json").is_file() for p in d.iterdir()):
        study = load_run_dirs(d)
    else:
        raise StudyError(f"{d} is neither a sweep directory (no {FILE}) nor a folder of run directories")
    if not study.runs:
        raise StudyError(f"{d} holds no runs yet")
    return study
