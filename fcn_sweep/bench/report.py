"""The bench's numbers, measured and put in lines for a person; nothing here prints.

Shared machines are noisy, so every variant runs once per repeat, interleaved, and a figure is the
median over repeats. Ratios compare variants measured in the same repeats (the median of the
paired ratios), with their range over the repeats in brackets; where one variant's repeats spread
by more than UNSTEADY, a line says so, since a ratio is then only as good as its range (a shared VM
here moved `floor+update` from 2.6 to 5.3 ms a step within seconds). Times cover training steps
only; evaluation is the same for every variant.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .. import data as data_mod
from ..config import RunConfig
from .variants import Variant

TRAIN_SIZE = 50_000  # one epoch of the project's training split
UNSTEADY = 1.25  # slowest / fastest repeat of one variant beyond which the run is called unsteady


def measure(variants: Mapping[str, Variant], repeats: int) -> dict[str, list[float]]:
    """Seconds per config of each variant per repeat; a first untimed round warms caches and allocators."""
    for v in variants.values():
        v.run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, v in variants.items():
            times[name].append(v.run() / v.k)
    return times


def paired(times: Mapping[str, list[float]], a: str, b: str, unit: str = "") -> str:
    """The median over repeats of a/b, each repeat's pair measured back to back, and over two or more
    repeats the range of those paired ratios: `1.23 [1.18-1.30]`."""
    rs = sorted(x / y for x, y in zip(times[a], times[b], strict=True))
    return f"{statistics.median(rs):.2f}{unit}" + (f" [{rs[0]:.2f}-{rs[-1]:.2f}]" if len(rs) > 1 else "")


def unsteady(times: Mapping[str, list[float]], ks: Mapping[str, int], steps: int) -> list[str]:
    """One line naming the variant whose repeats spread most, if the slowest took over UNSTEADY times
    the fastest; none on a steady run."""
    name = max(times, key=lambda n: max(times[n]) / min(times[n]))
    fast, slow = min(times[name]), max(times[name])
    if len(times[name]) < 2 or slow <= UNSTEADY * fast:
        return []
    ms = lambda t: t * ks[name] / steps * 1e3  # noqa: E731
    return [
        f"unsteady: {name} took {ms(fast):.3f} to {ms(slow):.3f} ms a step over {len(times[name])} repeats "
        "(something else ran on this machine); read each ratio with its range in brackets"
    ]


@dataclass(frozen=True)
class Limits:
    peak: float  # FLOP/s of the large product
    peak_size: int
    flops: Callable[[int], int]  # K -> FLOPs of one step of a pack of K
    ops: dict[str, int]  # variant -> top-level ops of one step


def table(
    times: Mapping[str, list[float]], ks: Mapping[str, int], steps: int, epoch_steps: int, limits: Limits
) -> list[str]:
    columns = (("variant", -13), ("K", 4), ("ms/step", 9), ("s/epoch", 8), ("GFLOP/step", 10), ("GFLOP/s", 8))
    head = " ".join(f"{name:<{-w}}" if w < 0 else f"{name:>{w}}" for name, w in columns)
    lines = [f"{head} {'of peak':>7} {'ops/step':>8}"]
    for name, ts in times.items():
        k = ks[name]
        step_s = statistics.median(ts) * k / steps  # a whole step of the pack
        flops = limits.flops(k)
        ops = limits.ops.get(name)
        lines.append(
            f"{name:<13} {k:>4} {step_s * 1e3:>9.3f} {step_s / k * epoch_steps:>8.3f} {flops / 1e9:>10.4g} "
            f"{flops / step_s / 1e9:>8.1f} {flops / step_s / limits.peak:>7.1%} {'–' if ops is None else ops:>8}"
        )
    return lines


def report(
    times: Mapping[str, list[float]], ks: Mapping[str, int], steps: int, cfg: RunConfig, epochs: int, limits: Limits
) -> tuple[list[str], int]:
    """The table, the ratios and configs/hour; and the best K (the most configs per hour)."""
    epoch_steps = len(data_mod.batch_starts(TRAIN_SIZE, cfg.batch_size))
    per_epoch = {name: statistics.median(ts) * epoch_steps / steps for name, ts in times.items()}
    packed = [name for name in times if name.startswith("packed ")]
    lines = [
        f"peak: {limits.peak_size}x{limits.peak_size} fp32 matmul {limits.peak / 1e9:,.1f} GFLOP/s "
        "(this device's practical FP32 rate, measured now); s/epoch is per config, training only",
        *table(times, ks, steps, epoch_steps, limits),
        f"naive/project  {paired(times, 'naive', 'project')}",
        f"project/floor  {paired(times, 'project', 'floor')}",
        f"project/(floor+update)  {paired(times, 'project', 'floor+update')}  "
        f"(floor+update/floor {paired(times, 'floor+update', 'floor')}: the optimizer's pass over memory)",
        *(f"{name}/floor  {paired(times, name, 'floor')}  (per config)" for name in packed),
        *unsteady(times, ks, steps),
    ]
    counted = [name for name in ("project", *packed) if name in limits.ops]
    lines.append(
        "ops/step (torch.profiler, top-level ops of one training step): "
        + ", ".join(f"K={ks[name]} {limits.ops[name]}" for name in counted)
    )
    per_hour = {name: 3600 / (per_epoch[name] * epochs) for name in ("project", *packed)}
    best = max(per_hour, key=per_hour.get)
    gain = f"{paired(times, 'project', best, 'x')} one at a time (median of paired ratios)" if best != "project" else ""
    lines.append(
        f"configs/hour ({epochs} epochs, training only): "
        + ", ".join(f"K={ks[name]} {per_hour[name]:,.1f}" for name in per_hour)
        + f"; best K={ks[best]}"
        + (f": {gain}" if gain else ": packing does not pay here")
    )
    return lines, ks[best]
