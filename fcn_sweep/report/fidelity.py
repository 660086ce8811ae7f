"""Which runs a comparison may rest on when Hyperband cut some of them short.

A run stopped at epoch 3 has its best validation accuracy from epochs 1-3; setting that number
beside a 30-epoch run's says more about the budget than about the parameters. So a comparison
(importance, correlations, marginals) rests on one `Basis`: either the runs that reached the full
budget (not stopped early), each scored by its best validation accuracy, or every run at the first
bracket, each scored by its validation accuracy at that epoch (every run that counts got that far,
so all of them take part, on equal terms). The first is what the runs finally reach; the second
sees the stopped runs too, at a budget too short to tell late bloomers apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..formatting import plural
from .load import RunRecord, Study


@dataclass(frozen=True)
class Basis:
    runs: list[RunRecord]
    scores: list[float]  # one per run: what is compared
    epoch: int | None  # None: each run's best val acc over its whole training; else val acc at this epoch
    describe: str  # which runs and which budget, in words, for captions
    left_out: int  # runs that count but are not compared on this basis

    @property
    def name(self) -> str:
        return "best val acc" if self.epoch is None else f"val acc at epoch {self.epoch}"


_n = plural


def cut_short(r: RunRecord) -> bool:
    """Stopped before the end of its budget (by Hyperband or another stop): its best is an early best.
    A stop that lands with the last epoch cut nothing."""
    return r.state == "stopped" and len(r.history) < r.config.epochs


def truncated(study: Study) -> list[RunRecord]:
    return [r for r in study.done if cut_short(r)]


def full_budget(study: Study) -> Basis:
    done = study.done
    runs = [r for r in done if not cut_short(r)]
    epochs = sorted({r.config.epochs for r in runs})
    budget = f"their full budgets ({', '.join(map(str, epochs))} epochs)" if epochs else "their full budgets"
    if len(epochs) == 1:
        budget = f"their full {_n(epochs[0], 'epoch')}"
    cut = len(done) - len(runs)
    describe = f"the {_n(len(runs), 'run')} that trained {budget}, scored by best val acc" + (
        f"; {_n(cut, 'run')} stopped early left out" if cut else ""
    )
    return Basis(runs, [r.objective for r in runs], None, describe, cut)


def first_bracket(study: Study) -> int | None:
    """The earliest epoch at which runs are compared: the sweep's Hyperband `min_iter` where known,
    else the fewest epochs any run that counts logged."""
    et = study.sweep.get("early_terminate") or {}
    if et.get("min_iter"):
        return int(et["min_iter"])
    logged = [len(r.history) for r in study.done if r.history]
    return min(logged) if logged else None


def val_at(r: RunRecord, epoch: int) -> float | None:
    return next((h.get("val/acc") for h in r.history if h.get("epoch") == epoch), None)


def at_epoch(study: Study, epoch: int) -> Basis:
    done = study.done
    pairs = [(r, val_at(r, epoch)) for r in done]
    kept = [(r, v) for r, v in pairs if v is not None]
    missing = len(done) - len(kept)
    describe = f"all {_n(len(kept), 'run')} at epoch {epoch} (the first bracket), scored by val acc at that epoch" + (
        f"; {_n(missing, 'run')} that ended before it left out" if missing else ""
    )
    return Basis([r for r, _ in kept], [v for _, v in kept], epoch, describe, missing)


def bases(study: Study) -> tuple[Basis, Basis | None]:
    """The full-budget basis, and the first-bracket one when some runs were cut short (otherwise
    it would only repeat the first at a shorter budget)."""
    full = full_budget(study)
    epoch = first_bracket(study)
    early = at_epoch(study, epoch) if truncated(study) and epoch is not None else None
    return full, early


def stop_epochs(runs: list[RunRecord]) -> dict[int, int]:
    """How many runs stopped after each number of epochs, fewest epochs first."""
    return dict(sorted(Counter(len(r.history) for r in runs).items()))


def brackets(study: Study, up_to: int) -> list[int]:
    """Hyperband's bracket epochs (min_iter x eta^k) up to `up_to`, where the sweep says."""
    et = study.sweep.get("early_terminate") or {}
    if et.get("type") != "hyperband" or not et.get("min_iter"):
        return []
    eta = max(2, int(et.get("eta", 3)))
    out, k = [], int(et["min_iter"])
    while k <= up_to:
        out.append(k)
        k *= eta
    return out
