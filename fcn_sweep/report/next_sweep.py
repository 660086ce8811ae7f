"""report/next-sweep.yaml: the sweep that would answer what this study could not.

Written only when the report finds aliased parameters or too few seeds to rank the top configs. It
is a grid: the aliased parameters (and those in which the configs tied with the best differ from
it) crossed, every other RunConfig field fixed at the best config's value, and `seed` listed so
that each config runs several times on W&B and locally alike. A W&B sweep file, flat, with floats
that PyYAML reads back as floats and plain Python values (never numpy scalars).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import yaml

from ..config import RunConfig
from ..formatting import plural
from ..sweep.spec import plain
from . import analysis as an
from . import evidence as ev
from . import interactions as ix
from .configs import REPEAT_AXIS
from .load import Study, levels

FILE = "next-sweep.yaml"
COMMAND = ["${env}", "fcn-sweep", "train", "${args}"]


@dataclass(frozen=True)
class NextSweep:
    sweep: dict[str, Any]
    crossed: list[str]
    repeats: int
    configs: int  # distinct configs in the grid, seeds apart
    why: list[str]  # what it settles, in a few words each

    @property
    def runs(self) -> int:
        return self.configs * self.repeats


def _raw(study: Study, name: str) -> list[Any]:
    """The values a sweep file lists for a parameter: as RunConfig takes them, in display order."""
    raw = {}
    for r in study.done:
        if (v := r.value(name)) not in raw:  # to_dict once per value, not once per run
            raw[v] = r.config.to_dict()[name]
    return [raw[v] for v in levels(study, name, study.done)]


def plan(study: Study, entries: list[an.Entry], found: ev.Evidence, named: list[ix.Interaction]) -> NextSweep | None:
    """The sweep that settles what is open: aliased parameters crossed, ties with the best resolved,
    named interactions sized (crossed, with the seeds that put an interval of half its size on each)."""
    seeds = max((e.val.n for e in entries), default=0)
    sizing = [(x, ix.seeds_to_size(x, found.noise)) for x in named]
    sizing = [(x, n) for x, n in sizing if n > seeds]
    if not entries or not (found.aliases or found.too_few_seeds or sizing):
        return None
    best = entries[0]
    crossed = {p for a in found.aliases for p in a.params} | {p for x, _ in sizing for p in x.params}
    for e in entries:
        if e.group in found.noise.within:
            crossed |= {p for p in study.swept if e.values[p] != best.values[p]}
    crossed_order = [p for p in study.swept if p in crossed]
    need = found.noise.repeats
    repeats = max(ev.MIN_REPEATS, need) if need is not None and need <= ev.MAX_REPEATS else ev.MIN_REPEATS
    repeats = max([repeats, *(n for _, n in sizing)])
    fixed = best.runs[0].config.to_dict()
    params: dict[str, Any] = {}
    for f in fields(RunConfig):
        if f.name == REPEAT_AXIS:
            params[f.name] = {"values": list(range(repeats))}
        elif f.name in crossed:
            params[f.name] = {"values": _raw(study, f.name)}
        else:
            params[f.name] = {"value": fixed[f.name]}
    why = []
    if found.aliases:
        why.append("cross " + "; ".join(" × ".join(a.params) for a in found.aliases))
    why += [f"cross {' × '.join(x.params)} to size their interaction" for x, _ in sizing]
    if found.too_few_seeds or sizing:
        why.append(f"{repeats} seeds per config")
    sweep = {
        "project": "fcn-sweep",
        "name": f"{study.name}-next",
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "command": COMMAND,
        "parameters": plain(params),
    }
    configs = math.prod(len(params[p]["values"]) for p in crossed_order)
    return NextSweep(sweep, crossed_order, repeats, configs, why)


def _flow(value: Any) -> str:
    """One value as YAML on one line: floats as PyYAML writes them (1.0e-05, never 1e-5, which it
    would read back as a string), lists in brackets."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()


def render(nxt: NextSweep, study: Study) -> str:
    """The sweep file in the style of sweeps/*.yaml: what it is for in the comments, flat parameters."""
    sw = nxt.sweep
    lines = [
        f"# The next sweep for {study.name}, written by fcn-sweep report: {', '.join(nxt.why)}.",
        f"# {plural(nxt.configs, 'config')} x {plural(nxt.repeats, 'seed')} = {plural(nxt.runs, 'run')}; every other "
        "parameter is fixed at the best config's value.",
        f"#   Locally: fcn-sweep sweep {FILE}   On W&B: wandb sweep {FILE}   (from the report folder)",
        f"project: {sw['project']}",
        f"name: {_flow(sw['name'])}",
        f"method: {sw['method']}",
        "metric:",
        *(f"  {k}: {_flow(v)}" for k, v in sw["metric"].items()),
        "command:",
        *(f"  - {_flow(c)}" for c in sw["command"]),
        "parameters:",
    ]
    for name, spec in sw["parameters"].items():
        ((key, value),) = spec.items()
        lines += [f"  {name}:", f"    {key}: {_flow(value)}"]
    return "\n".join(lines) + "\n"
