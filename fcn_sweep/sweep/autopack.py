"""`--pack auto`: how many runs of one shape a worker trains at once on this device.

One function decides (`choose_pack`), from facts it is given, so it can be tested without the
device: the memory free for training, the pending runs of each shape, and, where measured, the
configs per second at a few pack sizes. The rest of this module gathers those facts.

- A pack larger than the largest group of pending runs of one `pack_key` can never fill.
- A pack must fit in memory: a member holds its weights, gradients and two optimizer moments,
  and its activations for a training batch and an evaluation chunk (footprint.py); only
  MEMORY_SHARE of what is free counts, the rest left to the data, the allocator and CUDA graphs.
- Where rates were measured, the smallest K within RATE_TOLERANCE of the best rate wins: a pack
  costs latency (every member's first result waits for the whole pack's epoch) and Hyperband
  decides per epoch, so a larger K must pay for itself. On a CPU the matrix multiplies already run
  near the CPU's peak and packing wins back little (docs/speed.md), so there K comes from a short
  measurement (`measure_rates`, a few seconds); without one a CPU trains alone.
- Without rates on a GPU, the largest K that fits and fills, up to MAX_PACK: a GPU runs one small
  network's step far below its FLOP rate (launch-bound), and packing is what fills it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config import RunConfig
from ..footprint import PACK_OVERHEAD, describe, gib, member_bytes

__all__ = ["MAX_PACK", "MEMORY_SHARE", "DeviceFacts", "auto_pack", "choose_pack", "device_facts", "member_bytes"]

MEMORY_SHARE = 0.5
RATE_TOLERANCE = 0.05
MAX_PACK = 512  # the largest K `fcn-sweep bench` measures on a GPU; beyond it results arrive later for no known gain
CPU_TRY = 8  # the pack size a CPU measures against one alone


@dataclass(frozen=True)
class DeviceFacts:
    kind: str  # "cpu" or "cuda"
    free_bytes: int  # memory free for training on that device


def choose_pack(
    facts: DeviceFacts, pending: Sequence[int], per_member: int, rates: Mapping[int, float] | None = None
) -> tuple[int, str]:
    """(K, why). `pending`: the runs of each pack_key still to do; `per_member`: `member_bytes` of
    the largest shape; `rates`: measured configs per second at some K (K=1 among them)."""
    fill = max(pending, default=1)
    overhead = PACK_OVERHEAD if facts.kind == "cuda" else 0
    fits = max(1, (int(facts.free_bytes * MEMORY_SHARE) - overhead) // max(1, per_member))
    limits = {f"the {fill} pending run(s) of one shape": fill, f"memory ({fits} fit)": fits, "the cap": MAX_PACK}
    limit, cap = min(limits.items(), key=lambda item: item[1])
    usable = {k: r for k, r in (rates or {}).items() if k <= cap}
    if usable:
        best = max(usable.values())
        k = min(k for k, r in usable.items() if r >= (1 - RATE_TOLERANCE) * best)
        shown = ", ".join(f"K={k} {r:.2f}" for k, r in sorted(usable.items()))
        return k, f"measured configs/s {shown}; the smallest K within {RATE_TOLERANCE:.0%} of the best"
    if facts.kind == "cpu":
        return 1, "a CPU without a measurement trains alone"
    return cap, f"the largest K that fits and fills, limited by {limit}"


def device_facts(device: str) -> DeviceFacts:
    """What `choose_pack` needs to know of `device` (cpu, cuda, cuda:N)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return DeviceFacts("cuda", free)
    return DeviceFacts("cpu", _available_ram())


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def measure_rates(cfg: RunConfig, device: str, ks: Sequence[int], steps: int = 16, rounds: int = 2) -> dict[int, float]:
    """Configs per second of one epoch (training and evaluation) of `cfg`'s shape at each K, from
    `steps` timed steps (`estimate.epoch_seconds`). The sizes take turns for `rounds` rounds and
    each keeps its best: a small network's steps take milliseconds, and on a shared machine one
    timing can be several times another, so a comparison of single timings could pick either K."""
    from dataclasses import replace

    from .. import data as data_mod
    from .estimate import epoch_seconds

    data = data_mod.load(device, cfg.subset)
    rates = dict.fromkeys(ks, 0.0)
    for _ in range(rounds):
        for k in ks:
            seconds, _, _ = epoch_seconds([replace(cfg, seed=cfg.seed + i) for i in range(k)], data, steps)
            rates[k] = max(rates[k], k / seconds)
    return rates


def auto_pack(todo: Sequence[RunConfig], device: str, threads: int | None = None) -> tuple[int, str]:
    """K for a worker on `device` that will claim from `todo` (the pending runs): the facts of this
    device, and on a CPU a short measurement, alone and at CPU_TRY, of the largest group's shape."""
    from .estimate import pack_groups

    groups = list(pack_groups(todo).values())
    if not groups:
        return 1, "no run pending"
    facts = device_facts(device)
    biggest = max(groups, key=len)
    largest = max((g[0] for g in groups), key=member_bytes)
    per_member = member_bytes(largest)
    rates = None
    if facts.kind == "cpu" and len(biggest) > 1:
        import torch

        if threads:
            torch.set_num_threads(threads)
        rates = measure_rates(biggest[0], device, (1, min(CPU_TRY, len(biggest))))
    k, why = choose_pack(facts, [len(g) for g in groups], per_member, rates)
    return k, f"{why}; {describe(largest)}, {gib(facts.free_bytes)} free"


AUTO = "auto"


def parse_pack(text: str | int) -> int | str:
    """`--pack` of sweep, worker and slurm workers: a positive integer, or `auto`."""
    text = str(text).strip()
    if text == AUTO:
        return AUTO
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--pack must be a positive integer or auto, got {text!r}")
    return int(text)


def resolve(pack: int | str, todo: Sequence[RunConfig], device: str, threads: int | None) -> tuple[int, str | None]:
    """(K, a line saying how `auto` chose it, or None when K was given)."""
    if pack != AUTO:
        return int(pack), None
    k, why = auto_pack(todo, device, threads)
    return k, f"--pack auto: K={k} on {device} ({why})"
