"""What a reader must not conclude, in sentences: aliasing, seed noise, run health, the next sweep.

Plain text (parameter names as they are); html.py escapes it, markdown.py uses it as is. The
numbers come from evidence.py; the same sentences open both summaries, so the two never disagree.
"""

from __future__ import annotations

from .. import formatting
from . import analysis as an
from . import evidence as ev
from . import interactions as ix
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
    ablated = {ab.param for ab in results.ablations if ab.rows}
    out += [interaction(x, x.params[0] in ablated) for x in results.named]
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


# --- two-way interactions -------------------------------------------------------------------------
def _pair(x: ix.Interaction) -> str:
    return " × ".join(x.params)


def _corrected(x: ix.Interaction) -> str:
    k = max(x.family, x.compared)
    return f", corrected for the {k} contrasts compared" if k > 1 else ""


def interaction(x: ix.Interaction, ablated: bool) -> str:
    """A named interaction in a sentence: the first parameter's effect at two levels of the other."""
    a, b = x.axes
    c = x.contrast
    at = ", ".join(f"{d:+.4f} at {b.name}={b.labels[j]}" for d, j in zip(c.at, c.b, strict=True))
    lo, hi = c.interval
    return (
        f"The effect of {a.name} depends on {b.name}: {a.labels[c.a[1]]} vs {a.labels[c.a[0]]} {at} (interaction "
        f"{c.value:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}] from {x.noise}{_corrected(x)})"
        + (f"; the averaged ablation of {a.name} hides this." if ablated else ".")
    )


def interactions_note(found: list[ix.Interaction]) -> str:
    return (
        "For each pair of swept parameters the study crosses: the interaction contrast, the difference of the "
        "differences (the first's effect at one level of the second minus its effect at another), in each setting "
        "of the other parameters that holds all four combinations, averaged; with more than two levels the "
        "largest such contrast. Its 95% interval comes from the seed noise (or, without repeats, from how much "
        "it varies between matched settings) and is widened for the number of contrasts compared. Beyond noise: "
        "the interval excludes 0; the summary names only those."
        + (" Continuous parameters are split into three bins." if any(x.pooled for x in found) else "")
    )


def interactions_table(found: list[ix.Interaction]) -> tuple[list[str], list[list[str]]]:
    """Every crossed pair with its largest contrast and verdict, as plain-text cells."""
    rows = []
    for x in found:
        c = x.contrast
        a, b = x.axes
        which = (
            "–" if c is None else f"{a.labels[c.a[1]]} vs {a.labels[c.a[0]]} × {b.labels[c.b[1]]} vs {b.labels[c.b[0]]}"
        )
        size = "–" if c is None else f"{c.value:+.4f}"
        ci = "–" if c is None or c.interval is None else f"[{c.interval[0]:+.4f}, {c.interval[1]:+.4f}]"
        rows.append([_pair(x), which, size, ci, x.verdict + (f" ({x.why})" if x.why else "")])
    return ["pair", "largest contrast", "interaction", "95% interval", "verdict"], rows


def means_table(x: ix.Interaction) -> tuple[list[str], list[list[str]]]:
    """The table of config means of one pair, with each parameter's effect at each level of the other."""
    a, b = x.axes
    header = [f"{a.name} \\ {b.name}", *(f"{b.name}={v}" for v in b.labels),
              *(f"Δ {v} vs {b.labels[0]}" for v in b.labels[1:])]  # fmt: skip
    rows = []
    for i, label in enumerate(a.labels):
        cells = [formatting.metric(c.mean) + (f" ({_n(c.runs, 'run')})" if c.configs else "") for c in x.cells[i]]
        rows.append([label, *cells, *(_signed(d) for d in x.effects_b[i][1:])])
    for i, label in enumerate(a.labels[1:], 1):
        rows.append([f"Δ {label} vs {a.labels[0]}", *(_signed(x.effects[j][i]) for j in range(len(b.labels))),
                     *([""] * (len(b.labels) - 1))])  # fmt: skip
    return header, rows


def _signed(d: float | None) -> str:
    return "–" if d is None else f"{d:+.4f}"


def by_level(param: str, split: tuple[ix.Interaction, dict]) -> str:
    """An interacting parameter's ablation, per level of its partner."""
    x, levels = split
    other = x.params[1] if x.params[0] == param else x.params[0]
    parts = []
    for label, deltas in levels.items():
        shown = ", ".join(
            f"{formatting.value(v)} {d.mean:+.4f}"
            + (f" [{d.interval[0]:+.4f}, {d.interval[1]:+.4f}]" if d.interval else "")
            for v, d in deltas.items()
        )
        parts.append(f"at {other}={label}: {shown or '–'}")
    return f"per level of {other}, with which it interacts (95% intervals): " + "; ".join(parts)
