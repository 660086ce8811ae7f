"""What one member of a pack holds in device memory, as an upper bound: what `--pack auto` sizes K
with, what `--dry-run` prints, and what an out-of-memory error says a run needed.

Per member: its parameters four times (weights, gradients and two optimizer moments, which every
pack allocates whatever the optimizer) and twice more for the stacked update's temporaries on
CUDA (a step's direction, and the decayed gradients where weight decay is on); a training step's
activations, about eight values per hidden unit and sample (the product, the normalised value,
the activation, the dropout mask and its output, and their gradients on the way back) plus the
gathered images twice; and an evaluation chunk (packed.Pack.evaluate's 256 samples at least).
fp32 throughout. docs/gpu.md compares it with `torch.cuda.max_memory_allocated` on an H200;
tests/test_out_of_memory.py with a pack's own tensors.
"""

from __future__ import annotations

import itertools

from .config import RunConfig

BYTES = 4  # fp32
EVAL_SAMPLES = 256  # the smallest evaluation chunk a member's activations take (packed.Pack.evaluate)
# What a pack holds whatever its size: cuBLAS's workspaces, the allocator's segments, a graph's pool
# (an H200 held 261 MiB for a pack of one 26 MiB member, docs/gpu.md).
PACK_OVERHEAD = 256 << 20


def parts(cfg: RunConfig) -> dict[str, int]:
    """Bytes per member: `state` (parameters, gradients, moments), `update` (the update's
    temporaries), `step` (a training step's activations), `evaluation` (an evaluation chunk's)."""
    widths = [28 * 28, *cfg.hidden, 10]
    params = sum(i * o + o for i, o in itertools.pairwise(widths)) + 2 * sum(cfg.hidden) * cfg.batch_norm
    step = cfg.batch_size * (2 * widths[0] + 8 * sum(cfg.hidden) + 4 * widths[-1])
    evaluation = EVAL_SAMPLES * sum(widths)
    counts = {"state": 4 * params, "update": 2 * params, "step": step, "evaluation": evaluation}
    return {name: BYTES * n for name, n in counts.items()}


def member_bytes(cfg: RunConfig) -> int:
    return sum(parts(cfg).values())


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def describe(cfg: RunConfig) -> str:
    """`7.4 MiB a member (state 5.1 MiB, step 2.0 MiB, evaluation 0.3 MiB)`"""
    p = parts(cfg)
    return f"{gib(sum(p.values()))} a member ({', '.join(f'{k} {gib(v)}' for k, v in p.items())})"


def out_of_memory_line(cfg: RunConfig, device: str) -> str:
    """What a run alone that did not fit says: what it needs and what the device has free."""
    free = ""
    try:
        import torch

        if str(device).startswith("cuda") and torch.cuda.is_available():
            free = f", {gib(torch.cuda.mem_get_info(torch.device(device))[0])} free now"
    except RuntimeError:  # the device is in no state to answer
        pass
    return (
        f"out of memory on {device}: one run of {cfg.arch} at batch {cfg.batch_size} needs about "
        f"{describe(cfg)}, on top of the data{free}; free memory on that device, or use a smaller batch_size"
    )


def free_device_memory() -> None:
    """Give back what a pack that ran out of memory left cached (its tensors are garbage once the
    error is handled), so that the smaller packs after it find it free."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
