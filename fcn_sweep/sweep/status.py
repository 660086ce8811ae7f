"""`fcn-sweep status DIR`: a screen of the sweep from the store alone (the counts, what is running,
the last runs to end, the leaderboard), or with `--all` every slot's run."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from .. import formatting
from ..config import config_key
from .launch.slurm import launch_trouble
from .store import Store, StoredRun

# A terminal, a log viewer, a pasted snippet: every line of `fcn-sweep status` fits. Columns are named
# by config keys, as everywhere else; `fit` narrows values (never headers) to make a wide sweep fit.
WIDTH = 120
MISSING = "-"
RUNNING_SHOWN = 20  # a screen: more workers than this are summed up in a line (--all lists them)
LAST_ENDED = 5
# An architecture cut short (`1024-…`) reads as every width it could be: shown in full, always.
NEVER_CUT = frozenset({"hidden"})


def differing(params: list[dict]) -> list[str]:
    """The parameters in which these configs differ: only they tell the rows apart."""
    keys = list(dict.fromkeys(k for p in params for k in p))
    return [k for k in keys if len({str(p.get(k)) for p in params}) > 1]


def short_id(run_id: str) -> str:
    """The random tail of a generated id (`20261128-143353-tu22nor2` → `tu22nor2`): unique within a
    sweep, and what `fcn-sweep report --runs` and `ls runs/*tu22nor2` accept."""
    return run_id.rsplit("-", 1)[-1]


def run_row(r: StoredRun, keys: list[str], short: bool = False) -> tuple[str, ...]:
    s = r.summary
    return (
        short_id(r.id) if short else r.id,
        r.status + (f" ({r.stop_reason})" if r.stop_reason else ""),
        *(formatting.value(r.params.get(k), MISSING) for k in keys),
        f"{r.epoch}/{r.config.epochs}",
        formatting.metric(s.get("best_val_acc"), missing=MISSING),
        formatting.metric(s.get("test_acc_at_best"), missing=MISSING),
    )


def leaderboard(store: Store, top: int = 10) -> list[dict]:
    """Configs ranked by mean best validation accuracy over their seeds (done attempts only). A
    config is `config_key`'s: runs that differ only in their seed are one, whether the seeds came
    from --repeats or from a swept `seed`, as in the report."""
    done = store.done_runs()
    by_config: dict[str, list[StoredRun]] = defaultdict(list)
    for r in done:
        if r.summary.get("best_val_acc") is not None:
            by_config[config_key(r.params)].append(r)

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    board = []
    for runs in by_config.values():
        val = stats([r.summary["best_val_acc"] for r in runs])
        test = stats([r.summary["test_acc_at_best"] for r in runs])
        board.append(
            {
                "params": {k: v for k, v in runs[0].params.items() if k != "seed"},
                "seeds": len(runs),
                "val": val,
                "test": test,
                "runs": [r.id for r in runs],
            }
        )
    return sorted(board, key=lambda b: -b["val"][0])[:top]


def time_accounting(store: Store) -> dict[str, float] | None:
    """Where the workers' time went, over every `fcn-sweep sweep` invocation on record: seconds of
    `worker` time (wall x workers), of it `training` (epochs: train and evaluate), `per_run`
    (the rest of each claim: building the model, W&B init and finish, saving, store writes), and
    `start_idle` (the rest: worker start-up, warm-up, waiting for work, shutdown). A claim of a
    pack is counted once: its members share their epochs. Only claims made during a recorded
    invocation count (an invocation killed outright records nothing)."""
    invocations = store.invocations()
    if not invocations:
        return None
    worker = sum((i["ended"] - i["started"]) * i["workers"] for i in invocations)
    claims: dict[tuple, list[str]] = defaultdict(list)
    ended: dict[tuple, float] = defaultdict(float)
    for run in store.runs():
        if run.started is None or not any(i["started"] <= run.started <= i["ended"] for i in invocations):
            continue
        key = (run.worker, run.started)
        claims[key].append(run.id)
        ended[key] = max(ended[key], run.ended or run.started)
    epochs: dict[str, dict[int, float]] = defaultdict(dict, store.epoch_seconds())
    training = per_run = 0.0
    for key, ids in claims.items():
        shared: dict[int, float] = defaultdict(float)
        for i in ids:
            for epoch, seconds in epochs[i].items():
                shared[epoch] = max(shared[epoch], seconds)
        training += sum(shared.values())
        per_run += max(0.0, ended[key] - key[1] - sum(shared.values()))
    return {
        "worker": worker,
        "training": training,
        "per_run": per_run,
        "start_idle": max(0.0, worker - training - per_run),
        "runs": sum(len(ids) for ids in claims.values()),
    }


def time_line(store: Store) -> str | None:
    t = time_accounting(store)
    if t is None or t["worker"] <= 0:
        return None
    share = lambda key: f"{t[key] / t['worker']:.0%}"  # noqa: E731
    return (
        f"worker time {t['worker']:.1f} s: {share('training')} training, "
        f"{share('per_run')} per-run setup and logging ({t['per_run'] / max(1, t['runs']):.2f} s a run), "
        f"{share('start_idle')} worker start-up and idle"
    )


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *map(line, rows)])


def width_of(text: str) -> int:
    return max(map(len, text.splitlines()))


def fit(rows: list[tuple[str, ...]], header: tuple[str, ...], shrinkable: list[int], width: int = WIDTH) -> str:
    """`table`, made to fit `width` by cutting parameter values (the `shrinkable` columns), a
    character at a time from the widest column, cut cells ending in `…`: names (architectures,
    initialisations) first, numbers only if that is not enough, no column narrower than its header."""
    cells = [list(r) for r in rows]
    numeric = {j for j in shrinkable if all(_is_number(r[j]) for r in cells)}
    for group in ([j for j in shrinkable if j not in numeric], sorted(numeric)):
        while width_of(table([tuple(r) for r in cells], header)) > width:
            widths = {j: max(len(header[j]), *(len(r[j]) for r in cells)) for j in group}
            narrowest = {j: max(4, len(header[j])) for j in group}
            j = max((j for j in group if widths[j] > narrowest[j]), key=widths.get, default=None)
            if j is None:
                break
            cut = [r[j][: widths[j] - 2] + "…" if len(r[j]) >= widths[j] else r[j] for r in cells]
            if len(set(cut)) < len({r[j] for r in cells}):
                group = [g for g in group if g != j]  # cutting would make different values read the same
                continue
            for r, c in zip(cells, cut, strict=True):
                r[j] = c
    return table([tuple(r) for r in cells], header)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == MISSING
    return True


@dataclass(frozen=True)
class _Stat:
    mean: float
    std: float
    n: int


def render(store: Store, top: int = 10, every: bool = False) -> str:
    """The screen: counts, what is running, the last runs to end, the leaderboard; `every`: every
    slot's run instead of the running and the last ended (a grid has thousands)."""
    counts = store.counts()
    done, total = store.slots()
    out = [f"{done}/{total} configs done · " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
    line = time_line(store)
    if line:
        out[0] += "\n" + line
    out[0] += "".join("\n" + trouble for trouble in launch_trouble(store.launches()))  # SLURM tasks that failed
    runs = store.runs()
    keys = differing([r.params for r in runs])
    if every:
        out += runs_table(runs, keys, "runs (val acc: the best epoch's; test acc: at that epoch)")
    else:
        running = [r for r in runs if r.status == "running"]
        ended = sorted((r for r in runs if r.ended is not None), key=lambda r: (r.ended, r.slot), reverse=True)
        if running:
            more = f"; {len(running) - RUNNING_SHOWN} more with --all" if len(running) > RUNNING_SHOWN else ""
            out += runs_table(running[:RUNNING_SHOWN], keys, f"running ({len(running)}{more})")
        if ended:
            out += runs_table(ended[:LAST_ENDED], keys, f"last ended ({min(LAST_ENDED, len(ended))} of {len(ended)})")
        if not running and not ended:
            out += ["", "nothing has run yet"]
    board = leaderboard(store, top)
    if board:
        keys = differing([b["params"] for b in board])
        rows = [
            (str(i), *(formatting.value(b["params"].get(k), MISSING) for k in keys), str(b["seeds"]),
             formatting.pm(_Stat(*b["val"], b["seeds"])), formatting.pm(_Stat(*b["test"], b["seeds"])))
            for i, b in enumerate(board, 1)
        ]  # fmt: skip
        header = ("#", *keys, "seeds", "val acc", "test acc")
        out += [
            "",
            "leaderboard, best so far (by validation accuracy; mean ± std over seeds where there are several)",
            fit(rows, header, cuttable(keys, 1)),
        ]
    shown = 0 if every else min(len(running), RUNNING_SHOWN) + min(len(ended), LAST_ENDED)
    if not every and len(runs) > shown:
        out += ["", f"every slot's run: fcn-sweep status --all ({len(runs):,} lines)"]
    return "\n".join(out)


def runs_table(runs: list[StoredRun], keys: list[str], title: str) -> list[str]:
    """A titled table of runs; `trained` is the epochs done of the run's budget (`epochs` may be swept)."""
    header = ("id", "status", *keys, "trained", "val acc", "test acc")
    rows = [run_row(r, keys) for r in runs]
    if width_of(table(rows, header)) > WIDTH:  # ids lose their date before values lose digits
        rows = [run_row(r, keys, short=True) for r in runs]
    return ["", title, fit(rows, header, cuttable(keys, 2))]


def cuttable(keys: list[str], first: int) -> list[int]:
    """The columns of `keys` (the first at index `first`) whose values `fit` may cut."""
    return [first + i for i, k in enumerate(keys) if k not in NEVER_CUT]
