"""`fcn-sweep status DIR`: the table of runs and the leaderboard, from the store alone."""

from __future__ import annotations

import statistics
from collections import defaultdict

from .store import Store, StoredRun

COLUMNS = (
    "id",
    "state",
    "arch",
    "batch_norm",
    "init",
    "dropout",
    "optimizer",
    "lr",
    "momentum",
    "epochs",
    "best val",
    "test@best",
)


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def run_row(r: StoredRun) -> tuple[str, ...]:
    c, s = r.config, r.summary
    state = r.status + (f" ({r.stop_reason})" if r.stop_reason else "")
    return (
        r.id,
        state,
        c.arch,
        str(c.batch_norm).lower(),
        c.init,
        _fmt(c.dropout),
        c.optimizer,
        f"{c.lr:g}",
        f"{c.momentum:g}",
        f"{r.epoch}/{c.epochs}",
        _fmt(s.get("best_val_acc")),
        _fmt(s.get("test_acc_at_best")),
    )


def leaderboard(store: Store, top: int = 10) -> list[dict]:
    """Configs ranked by mean best validation accuracy over their seeds (done attempts only)."""
    done = store.done_runs()
    by_proposal: dict[int, list[StoredRun]] = defaultdict(list)
    for r in done:
        if r.summary.get("best_val_acc") is not None:
            by_proposal[r.proposal].append(r)

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    board = []
    for proposal, runs in by_proposal.items():
        val = stats([r.summary["best_val_acc"] for r in runs])
        test = stats([r.summary["test_acc_at_best"] for r in runs])
        board.append(
            {
                "proposal": proposal,
                "params": runs[0].params,
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


def render(store: Store, top: int = 10) -> str:
    counts = store.counts()
    done, total = store.slots()
    out = [f"{done}/{total} configs done · " + ", ".join(f"{k} {v}" for k, v in counts.items() if v)]
    line = time_line(store)
    if line:
        out[0] += "\n" + line
    out += ["", table([run_row(r) for r in store.runs()], COLUMNS)]
    board = leaderboard(store, top)
    if board:
        # Only what differs between the listed configs says anything.
        keys = [k for k in board[0]["params"] if len({str(b["params"].get(k)) for b in board}) > 1]
        rows = [
            (str(i), ", ".join(f"{k}={b['params'].get(k)}" for k in keys) or "(one config)", str(b["seeds"]),
             f"{b['val'][0]:.4f} ± {b['val'][1]:.4f}", f"{b['test'][0]:.4f} ± {b['test'][1]:.4f}")
            for i, b in enumerate(board, 1)
        ]  # fmt: skip
        out += [
            "",
            "leaderboard (by validation accuracy; test accuracy as mean ± std over seeds)",
            table(rows, ("#", "config", "seeds", "val acc", "test acc")),
        ]
    return "\n".join(out)
