"""What a config is, for every screen that counts configs: runs equal in everything but the seed.

A sweep makes repeats of one config either with `--repeats` (one proposal, several seeds) or with a
sweep file that lists `seed` as a parameter (W&B has no repeats, so each seed is its own proposal).
Grouping by the config itself, seed left out (`config.config_key`, which `fcn-sweep status` uses on
a run's parameters), gives the same answer both ways, so the two never disagree on what a config is.
Nothing here imports the rest of the report: status.py can use it without pulling in the analysis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from ..config import RunConfig, config_key

REPEAT_AXIS = "seed"  # the RunConfig field that tells repeats of one config apart (config_key leaves it out)
T = TypeVar("T")


def group_by_config(rows: Iterable[T], config: Callable[[T], RunConfig] = lambda row: row.config) -> list[list[T]]:
    """The rows (anything with a `.config`: a store's runs, the report's records) in groups of one
    config each, groups in the order their first row comes, rows in their given order."""
    groups: dict[str, list[T]] = {}
    for row in rows:
        groups.setdefault(config_key(config(row).to_dict()), []).append(row)
    return list(groups.values())


def group_numbers(configs: Iterable[RunConfig]) -> list[int]:
    """One number per config, shared by configs that are seeds of one another (0, 1, ... in order
    of first appearance)."""
    numbers: dict[str, int] = {}
    return [numbers.setdefault(config_key(c.to_dict()), len(numbers)) for c in configs]
