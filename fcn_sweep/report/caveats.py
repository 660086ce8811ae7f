"""What a reader must not conclude, in sentences: aliasing, seed noise, run health, the next sweep.

Plain text (parameter names as they are); html.py escapes it, markdown.py uses it as is. The
numbers come from evidence.py; the same sentences open both summaries, so the two never disagree.
"""

from __future__ import annotations

from .. import formatting
from . import analysis as an
from . import evidence as ev
from .importance import Importance
from .load import Study
from .next_sweep import FILE, NextSweep
from .results import Results

NEAR = "≈"  # marks a number that is within the seed noise of what it is compared with
SHOWN = 4  # value combinations quoted per aliased group


_n = formatting.plural


def _and(names: list[str] | tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def aliasing(alias: ev.Alias, runs: int) -> str:
    shown = "; ".join(" / ".join(map(formatting.value, c)) for c in alias.combos[:SHOWN])
    more = f"; … ({len(alias.combos)} in all)" if len(alias.combos) > SHOWN else ""
    return (
        f"Confounded: {_and(alias.params)} are aliased in the {_n(runs, 'run')} that count: their values "
        f"change together ({' / '.join(alias.params)}: {shown}{more}), so their effects cannot be told "
        f"apart. Importance is given for them together, and {'neither' if len(alias.params) == 2 else 'none of them'} "
        "can be ablated alone."
    )


def blocked(param: str, others: list[str]) -> str:
    if not others:
        return f"No ablation of {param}: it never changes while the rest stays put."
    verb = "is" if len(others) == 1 else "are"
    return (
        f"No ablation of {param}: no two configs differ in {param} alone; {_and(others)} must be held fixed "
        f"and {verb} not."
    )


def _settle(nz: ev.Noise) -> str:
    if nz.repeats is None or nz.gap is None:
        return ""
    if nz.repeats > ev.MAX_REPEATS:
        return (
            f" #1 leads #2 by {nz.gap:.4f}: even {ev.MAX_REPEATS} seeds per config would not separate them; "
            "treat them as tied."
        )
    return (
        f" #1 leads #2 by {nz.gap:.4f}: about {nz.repeats} seeds per config (--repeats {nz.repeats}) would "
        "settle the top."
    )


def noise(nz: ev.Noise, configs: int) -> str:
    within = f"{len(nz.within)} of the other {_n(configs - 1, 'config')} within the noise of the best (marked {NEAR})"
    if nz.source == "seeds":
        return (
            f"Seed noise: best val acc varies by {nz.spread:.4f} between seeds of one config (pooled standard "
            f"deviation, {nz.df} degrees of freedom); {within}." + _settle(nz)
        )
    if nz.source == "epochs":
        return (
            "One seed per config: ranks closer than a typical seed spread are not evidence. Judged by how "
            f"much val acc jitters over each run's last {ev.JITTER_EPOCHS} epochs (seeds are the real "
            f"measure), that spread is about {nz.spread:.4f}; {within}." + _settle(nz)
        )
    return (
        "One seed per config, and no curves to judge noise by: ranks closer than a typical seed spread are "
        f"not evidence; --repeats {ev.MIN_REPEATS} would measure it."
    )


def health(flags: list[ev.Flag]) -> str | None:
    if not flags:
        return None
    parts = []
    for kind, what in (("collapsed", "collapsed"), ("plateaued", "plateaued early"), ("overfit", "overfit")):
        these = [f for f in flags if f.kind == kind]
        if not these:
            continue
        text = f"{_n(len(these), 'run')} {what}"
        if kind == "collapsed":
            text += " (" + "; ".join(f"{an.short_id(f.run.id)}, {f.run.state}: {f.detail}" for f in these) + ")"
        parts.append(text)
    tail = (
        " A collapsed run's status does not say it collapsed; its best epoch is what ranks it."
        if any(f.kind == "collapsed" for f in flags)
        else ""
    )
    return "Run health: " + ", ".join(parts) + "; see Diagnostics." + tail


def next_sweep(nxt: NextSweep) -> str:
    return (
        f"Next sweep: {FILE} in this folder ({', '.join(nxt.why)}: {_n(nxt.configs, 'config')} × "
        f"{_n(nxt.repeats, 'seed')} = {_n(nxt.runs, 'run')}, the rest fixed at the best config); run it with "
        f"fcn-sweep sweep {FILE}."
    )


def nothing_finished(study: Study) -> str:
    """A study with no score yet: stopped before any run finished, or every run diverged or crashed."""
    counts = ", ".join(f"{k} {v}" for k, v in study.counts.items() if v)
    later = any(study.counts.get(s) for s in ("pending", "running"))
    return (
        f"Nothing has finished yet: none of the {_n(len(study.runs), 'run attempt')} ended with a score ({counts}); "
        + ("report again once runs have finished." if later else "see Diagnostics for why.")
    )


def summary(study: Study, results: Results) -> list[str]:
    """The caveats that open the summary, most serious first."""
    if results.finished_nothing:
        return [nothing_finished(study)]
    found = results.evidence
    out = [aliasing(a, len(study.done)) for a in found.aliases]
    out += [blocked(p, others) for p, others in found.blocked.items()]
    if len(results.configs) > 1:
        out.append(noise(found.noise, len(results.configs)))
    if (h := health(found.health)) is not None:
        out.append(h)
    if results.next_sweep is not None:
        out.append(next_sweep(results.next_sweep))
    return out


def versus_best(nz: ev.Noise, top: an.Entry, e: an.Entry) -> str:
    """The leaderboard's gap to #1, marked when it is inside the seed noise."""
    if e.group == top.group:
        return "–"
    gap = f"{e.val.mean - top.val.mean:+.4f}"
    return f"{NEAR} {gap}" if e.group in nz.within else gap


def leaderboard_note(nz: ev.Noise) -> str:
    if nz.spread is None:
        return "No estimate of the seed noise: gaps to #1 are shown unmarked."
    how = (
        f"Student's t with {nz.df} degrees of freedom on the pooled seed standard deviation ({nz.spread:.4f})"
        if nz.source == "seeds"
        else f"2 × the late-epoch jitter ({nz.spread:.4f}) standing in for the seed standard deviation"
    )
    return (
        f"Gap to #1: {NEAR} marks a gap inside the 95% interval for a difference of two configs' means "
        f"({how}, scaled by √(1/n₁ + 1/n) for their seed counts): not evidence that #1 is better."
    )


def importance_note(imp: list[Importance]) -> str:
    groups = [i for i in imp if i.members]
    text = "The interval beside each importance spans the 5th to 95th percentile over bootstrap resamples of the runs."
    if groups:
        text += "".join(
            f" {i.name} are aliased: one row for them together, as the runs cannot split it." for i in groups
        )
    return text


def ablation_intervals(ab: an.Ablation, found: ev.Evidence | None) -> str:
    if found is None or ab.param not in found.ablations:
        return ""
    ci = found.ablations[ab.param].interval
    parts = [f"{formatting.value(v)} [{lo:+.4f}, {hi:+.4f}]" for v, c in ci.items() if c is not None for lo, hi in [c]]
    if not parts:
        return ""
    how = (
        f"Student's t over the {_n(len(ab.rows), 'matched setting')}"
        if len(ab.rows) > 1
        else "from the seed noise, as there is one matched setting"
    )
    return f" 95% interval on the mean Δ ({how}): {'; '.join(parts)}."
