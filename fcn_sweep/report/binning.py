"""Continuous parameters as a reader can use them: a few bins, each with its mean and count.

A Bayesian or random sweep draws a fresh learning rate for every run, so "mean val acc per value"
would be one row per run, each resting on one run. Up to MAX_LEVELS distinct values are listed one
by one; more become at most MAX_LEVELS bins: equal widths of log10(value) for a log-spaced
parameter, so that a decade reads as a decade, and quantile bins (equal counts) for the others.
A bin is shown as the span of the values that fell in it, so bins never overlap and never claim a
range no run tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .load import Study, is_numeric

MAX_LEVELS = 8  # rows per parameter a reader can take in
MIN_BINS = 3
# The W&B sweep distributions whose values are spread over decades, and those that are not.
LOG_DISTRIBUTIONS = frozenset(
    {"log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
     "inv_log_uniform_values"}
)  # fmt: skip
LINEAR_DISTRIBUTIONS = frozenset({"uniform", "q_uniform", "normal", "q_normal", "int_uniform", "beta", "q_beta"})
SPREAD = 10  # without a known distribution: positive values spanning this ratio or more may be log-spaced


def unevenness(xs: np.ndarray) -> float:
    """How far values are from evenly spread over their range (Kolmogorov-Smirnov distance to the
    uniform distribution): 0 for an even grid, towards 1 when they crowd at one end."""
    x = np.sort((xs - xs.min()) / (xs.max() - xs.min()))
    n = len(x)
    return float(max((np.arange(1, n + 1) / n - x).max(), (x - np.arange(n) / n).max()))


def spread_is_log(values: list) -> bool:
    """Values spanning a decade or more that spread more evenly as exponents than as numbers: what
    a log-uniform draw or a grid in decades gives (lr 1e-4..1e-1), and a dropout drawn uniformly
    in 0.01..0.6 does not."""
    if not is_numeric(values) or min(values) <= 0 or max(values) / min(values) < SPREAD:
        return False
    xs = np.asarray(values, dtype=float)
    return unevenness(np.log10(xs)) < unevenness(xs)


def log_scale(study: Study, name: str, values: list) -> bool:
    """Whether a parameter is searched in decades: as the sweep file says where the study knows it,
    else from the spread of the values (learning rates 1e-4 to 1e-1 are; dropout 0 to 0.5 is not)."""
    if not is_numeric(values) or not values:
        return False
    spec = (study.sweep.get("parameters") or {}).get(name) or {}
    distribution = spec.get("distribution")
    if distribution in LOG_DISTRIBUTIONS:
        return min(values) > 0
    if distribution in LINEAR_DISTRIBUTIONS:
        return False
    return spread_is_log(values)


@dataclass(frozen=True)
class Bin:
    lo: float  # the smallest value in the bin
    hi: float  # the largest; a value belongs to the first bin whose `hi` is not below it

    def holds(self, v: float) -> bool:
        return self.lo <= v <= self.hi


def n_bins(n_runs: int) -> int:
    return max(MIN_BINS, min(MAX_LEVELS, round(math.sqrt(n_runs))))


def bins(values: list[float], log: bool, k: int | None = None) -> list[Bin] | None:
    """The bins for these values (one per run), or None when there are few enough distinct values
    to list each one; `k` bins where given (a two-way table needs coarser ones), else n_bins."""
    if len(set(values)) <= MAX_LEVELS:
        return None
    xs = np.log10(values) if log else np.asarray(values, dtype=float)
    k = k or n_bins(len(values))
    edges = np.linspace(xs.min(), xs.max(), k + 1) if log else np.quantile(xs, np.linspace(0, 1, k + 1))
    index = np.searchsorted(edges[1:-1], xs, side="right")
    members = [np.asarray(values, dtype=float)[index == i] for i in range(k)]
    return [Bin(float(m.min()), float(m.max())) for m in members if len(m)]


def centre(b: Bin, log: bool) -> float:
    """Where a bin's mean is drawn: the geometric centre of a log-spaced bin, else the middle."""
    return math.sqrt(b.lo * b.hi) if log else (b.lo + b.hi) / 2
