"""A sweep file, read and checked before anything runs: W&B's own schema first, then this
project's contract (flat parameters named as RunConfig fields, values RunConfig accepts, an
objective that the training loop logs once per epoch and that is not the test set)."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from ..config import ConfigError, RunConfig, read_mapping

METHODS = ("grid", "random", "bayes")
# The sweep objective must be logged every epoch and must not be the test set: it steers choices.
OBJECTIVES = ("val/acc", "val/loss", "train/acc", "train/loss")
FIELDS = tuple(name for name, *_ in RunConfig.describe())


class SweepFileError(ValueError):
    """A sweep file that cannot run; one line naming the file, the key and the fix."""


def plain(value: Any) -> Any:
    """JSON values instead of the numpy scalars that random and bayes proposals carry."""
    return json.loads(json.dumps(value, default=lambda v: v.item()))


def params_of(proposal) -> dict[str, Any]:
    """{name: value} from an engine proposal's {name: {"value": value}}."""
    return plain({k: v["value"] for k, v in proposal.config.items()})


def engine():
    """W&B's sweep engine, imported without the warning its pydantic-v1-style config raises."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
    return sweeps


def load_sweep(path: str | Path) -> dict:
    p = Path(path)
    try:
        cfg = read_mapping(p, "sweep file", "method, metric and parameters")
    except ValueError as e:
        raise SweepFileError(str(e)) from None
    return check_sweep(cfg, str(p))


def check_sweep(cfg: dict, where: str) -> dict:
    """`cfg`, a sweep config (from a file, or as W&B's server holds it), if it can run here: W&B's
    schema, parameters that are RunConfig keys, values RunConfig accepts; else SweepFileError, one
    line that starts with `where`."""
    sweeps = engine()

    def fail(msg: str):
        raise SweepFileError(f"{where}: {msg}")

    if cfg.get("method") not in METHODS:
        fail(f"method must be one of {', '.join(METHODS)}, got {cfg.get('method')!r}")
    metric = cfg.get("metric")
    if not isinstance(metric, dict) or metric.get("name") not in OBJECTIVES:
        name = metric.get("name") if isinstance(metric, dict) else metric
        fail(f"metric.name must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    if metric.get("goal", "minimize") not in ("maximize", "minimize"):
        fail(f"metric.goal must be maximize or minimize, got {metric.get('goal')!r}")
    params = cfg.get("parameters")
    if not isinstance(params, dict) or not params:
        fail("parameters must be a non-empty mapping of RunConfig keys")
    for name, spec in params.items():
        if name not in FIELDS:
            fail(f"unknown parameter {name!r}; parameters are RunConfig keys: {', '.join(FIELDS)}")
        if not isinstance(spec, dict):
            fail(f"parameter {name!r} must be a mapping such as {{values: [...]}} or {{value: x}}")
        if "parameters" in spec:
            fail(f"parameter {name!r} is nested; W&B's engine drops nested parameters, keep them flat")
        if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
            fail(f"parameter {name!r} has empty values; list at least one")
        for value in spec.get("values", []) + ([spec["value"]] if "value" in spec else []):
            try:
                RunConfig.from_dict({name: value})
            except ConfigError as e:
                fail(str(e))
    violations = sweeps.schema_violations_from_proposed_config(cfg)
    if violations:
        fail(f"not a valid W&B sweep config: {' '.join(violations[0].split())}")
    # Distributions: sample what the engine may propose and check RunConfig accepts every value.
    sampler = {**copy.deepcopy(cfg), "method": "random"}
    sampler.pop("early_terminate", None)
    for proposal in sweeps.next_runs(sampler, [], n=20):
        try:
            RunConfig.from_dict(params_of(proposal))
        except ConfigError as e:
            fail(f"a value the engine proposes is rejected: {e}")
    return cfg


def differences(stored: dict, given: dict, prefix: str = "") -> list[str]:
    """Where two sweep configs differ, as `key: stored X, file Y` (nested keys dotted), so a
    refusal to resume with a changed file can say what changed."""
    out = []
    for key in dict.fromkeys([*stored, *given]):
        a, b = stored.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: stored {json.dumps(a)}, file {json.dumps(b)}")
    return out
