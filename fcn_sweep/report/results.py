"""Everything the report says, assembled once: the last stage of the analysis, the first thing the
writers (figures, html, markdown) read. The stages run one way, each on what the earlier ones found:
load -> analysis -> evidence -> importance -> interactions -> next_sweep."""

from __future__ import annotations

from dataclasses import dataclass

from . import analysis as an
from . import evidence as ev
from . import fidelity
from . import importance as im
from . import interactions as ix
from . import next_sweep as nx
from .fidelity import Basis
from .load import RunRecord, Study


@dataclass(frozen=True)
class Results:
    configs: list[an.Entry]  # every config with a score, best first
    leaderboard: list[an.Entry]  # the top of `configs`
    importance: list[im.Importance]  # over `basis`: the runs that reached their full budget
    basis: Basis
    early: list[im.Importance]  # over `early_basis`: every run at the first bracket (when runs were cut short)
    early_basis: Basis | None
    ablations: list[an.Ablation]
    diagnostics: an.Diagnostics
    curves: list[RunRecord]
    curve_labels: list[str]
    evidence: ev.Evidence
    interactions: list[ix.Interaction]  # every crossed pair, named ones (beyond noise) first
    by_level: dict[str, tuple[ix.Interaction, dict]]  # an ablated parameter that interacts: its Δ per level
    next_sweep: nx.NextSweep | None = None

    @property
    def named(self) -> list[ix.Interaction]:
        return [x for x in self.interactions if x.named]

    @property
    def finished_nothing(self) -> bool:
        """No run ended with a score: stopped before any finished, or every one diverged or crashed."""
        return not self.configs


def analyse(study: Study, ablate: list[str], named: list[RunRecord], top: int = 10, curves: int = 4) -> Results:
    entries = an.configs(study)
    basis, early_basis = fidelity.bases(study)
    found = ev.aliases(study, entries)
    imp = im.importance(study, basis, found)
    rank = {i.name: k for k, i in enumerate(imp)}
    # the parameter that matters most first: that is the ablation a reader wants to see
    ablations = [an.ablation(study, p, entries) for p in sorted(ablate, key=lambda p: rank.get(p, len(rank)))]
    evidence = ev.assess(study, entries, ablations, found)
    # a run that trained badly is shown, whether or not it ranks
    picked = an.curve_runs(study, curves, [*named, *(f.run for f in evidence.health if f.kind == "collapsed")])
    keys = an.differing(study, picked)
    pairs = ix.interactions(study, entries, found, evidence.noise, rank)
    by_level = {}
    for ab in ablations:
        if ab.rows and (x := ix.partner(pairs, ab.param)) is not None:
            other = x.axes[1] if x.axes[0].name == ab.param else x.axes[0]
            by_level[ab.param] = (x, ix.ablation_by_level(ab, other, evidence.noise))
    return Results(
        configs=entries,
        leaderboard=entries[:top],
        importance=imp,
        basis=basis,
        early=im.importance(study, early_basis, found) if early_basis else [],
        early_basis=early_basis,
        ablations=ablations,
        diagnostics=an.diagnostics(study),
        curves=picked,
        curve_labels=[an.run_label(r, keys) + "".join(f" [{f.kind}]" for f in evidence.flags(r)) for r in picked],
        evidence=evidence,
        interactions=pairs,
        by_level=by_level,
        next_sweep=nx.plan(study, entries, evidence, [x for x in pairs if x.named]),
    )
