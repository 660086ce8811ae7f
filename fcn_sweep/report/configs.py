"""What a config is, for every screen that counts configs: runs equal in everything but the seed.

A sweep makes repeats of one config either with `--repeats` (one proposal, several seeds) or with a
sweep file that lists `seed` as a parameter (W&B has no repeats, so each seed is its own proposal).
Grouping by the config itself, seed left out, gives the same answer both ways; `fcn-sweep status`
and the report both group with `group_by_config`, so the two never disagree on what a config is.
Nothing here imports the rest of the report: status.py can use it without pulling in the analysis.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TypeVar

from ..config import RunConfig

REPEAT_AXIS = "seed"  # the RunConfig field that tells repeats of one config apart
T = TypeVar("T")


def config_key(config: RunConfig) -> str:
    """Equal for two configs exactly when they differ in nothing but the seed."""
    return json.dumps({**config.to_dict(), REPEAT_AXIS: None}, sort_keys=True)


def group_by_config(rows: Iterable[T], config: Callable[[T], RunConfig] = lambda row: row.config) -> list[list[T]]:
    """The rows (anything with a `.config`: a store's runs, the report's records) in groups of one
    config each, groups in the order their first row comes, rows in their given order."""
    groups: dict[str, list[T]] = {}
    for row in rows:
        groups.setdefault(config_key(config(row)), []).append(row)
    return list(groups.values())


def group_numbers(configs: Iterable[RunConfig]) -> list[int]:
    """One number per config, shared by configs that are seeds of one another (0, 1, ... in order
    of first appearance)."""
    numbers: dict[str, int] = {}
    return [numbers.setdefault(config_key(c), len(numbers)) for c in configs]
