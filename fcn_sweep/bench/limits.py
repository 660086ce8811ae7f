"""How far a training step is from this device's own limits: the arithmetic it must do, the rate
this device reaches on one large matrix multiply, and how many operations a step dispatches.

- FLOPs: the matrix multiplies of a step, counted from the widths: per layer of `i` inputs and `o`
  outputs, 2·B·i·o for the forward product, as much for the weight gradient, and as much again for
  the input gradient except at the first layer (no gradient for the images). Batch norm, dropout,
  the loss and the update are a few operations per element: next to the products they are
  memory traffic, not arithmetic, so they are not counted.
- Peak: FP32 FLOP/s of an n×n by n×n product measured in this process (n=4096 on a GPU, 1024 on a
  CPU: large enough to run at the BLAS's best, small enough to take a fraction of a second), the
  fastest of a few timings. A practical peak, not the vendor's sheet: what these kernels reach here.
- Operations per step: torch.profiler's top-level aten operations (what Python and autograd ask
  torch for; the ops they call inside are not counted again). One step's count is the difference
  between an epoch of three steps and one of two, so what an epoch does once (the shuffle, reading
  back the metrics) cancels out. On a GPU each is at least one kernel launch, which is what a small
  network's step is bound by.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .. import data as data_mod
from ..packed import Pack

PEAK_SIZE = {"cuda": 4096, "cpu": 1024}
PEAK_TIMINGS = 5


def step_flops(hidden: tuple[int, ...], batch: int, k: int = 1) -> int:
    """FLOPs of the matrix multiplies of one training step of K networks 784-hidden-10."""
    layers = list(itertools.pairwise([28 * 28, *hidden, 10]))
    return k * sum((6 if n else 4) * batch * i * o for n, (i, o) in enumerate(layers))


def peak_flops(device: torch.device) -> float:
    """FP32 FLOP/s of one large square product on `device`, the best of PEAK_TIMINGS timings."""
    n = PEAK_SIZE[device.type]
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    reps = 1
    best = 0.0
    for _ in range(PEAK_TIMINGS + 1):  # the first is a warm-up and sizes `reps` to take ~0.1 s
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        best = max(best, 2 * n**3 * reps / seconds)
        reps = max(reps, int(0.1 / max(seconds / reps, 1e-6)))
    return best


@contextmanager
def quiet_fd2() -> Iterator[None]:
    """The profiler's C++ side writes a line to file descriptor 2 as it starts and stops (and an
    error line on a machine without a GPU) that no one can act on: hidden while it does."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _top_level_ops(fn) -> int:
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    with quiet_fd2():
        prof.start()
    fn()
    with quiet_fd2():
        prof.stop()
    count = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def ops_per_step(pack: Pack, split: data_mod.Split, b: int) -> int:
    """Top-level operations one training step (batch `b`) of `pack` dispatches (profiled, see the module)."""
    never = lambda: False  # noqa: E731
    pack.train_epoch(data_mod.Split(split.x[: 2 * b], split.y[: 2 * b]), never)  # warm: first-call paths
    two = _top_level_ops(lambda: pack.train_epoch(data_mod.Split(split.x[: 2 * b], split.y[: 2 * b]), never))
    three = _top_level_ops(lambda: pack.train_epoch(data_mod.Split(split.x[: 3 * b], split.y[: 3 * b]), never))
    return three - two
