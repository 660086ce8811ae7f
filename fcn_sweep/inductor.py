"""torch.compile for the trainer's memory-bound parts, with a way back when compiling fails.

A pack's optimizer update and batch norm are chains of elementwise passes and reductions over
tensors of K members; on a GPU each pass is a trip through memory. Inductor fuses such a chain into
one kernel (Triton on CUDA, C++ on a CPU) that reads its inputs once. `Compiled` wraps one
function of the trainer (compiled.py's updates, kernels.py's `compiled` batch norm) so that:

- it compiles at its first call, which on CUDA is a pack's eager warm-up step (cuda_graph.py), so a
  capture records the compiled kernels and never a compile;
- shapes turn dynamic at the first recompile, so packs of other sizes and widths share kernels
  (dynamic from the start compiled 3x slower on the CPU);
- torch's recompile limit (8 variants of a function, after which it runs the Python eagerly and
  slowly) is raised to RECOMPILE_LIMIT for the process at the first compile: a study's packs differ
  in layer count, batch norm, weight decay on or off and K=1, and would spend 8 within one sweep;
- if compiling fails (no compiler, an older torch that cannot trace the function), `failed` says
  why, one warning names it, and every compiled function of this process runs its eager twin from
  then on: the same arithmetic to float rounding, slower. An error while compiled kernels run (out
  of memory, a device fault) is not a compile failure and is raised as it is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")
RECOMPILE_LIMIT = 64
failed: str | None = None  # why compiling failed in this process; None while it works


def compile_fn(fn: Callable[..., T]) -> Callable[..., T]:
    """torch.compile as the trainer uses it (tests replace it to make compiling fail)."""
    import torch._dynamo

    # Once, for the process, rather than a config patch around every call of a step: torch reads
    # the limit when a call misses its compiled variants.
    config = torch._dynamo.config
    limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
    setattr(config, limit, max(RECOMPILE_LIMIT, getattr(config, limit)))
    return torch.compile(fn, fullgraph=True, dynamic=None)


def _reason(err: BaseException) -> str:
    """One line: what failed, with the compiler's own error where torch wraps it (its first line is
    only `backend='inductor' raised:`)."""
    inner = getattr(err, "inner_exception", None)
    said = f"{type(err).__name__}: " + (f"{type(inner).__name__}: {inner}" if inner is not None else str(err))
    return said.splitlines()[0]


class Compiled:
    """`fn` compiled at its first `run`; `eager()` instead once compiling has failed in this process."""

    def __init__(self, fn: Callable[..., T]):
        self.fn = fn
        self._compiled: Callable[..., T] | None = None

    def run(self, eager: Callable[[], T], *args) -> T:
        """fn(*args), compiled; `eager()` (the same result by another route) if compiling fails."""
        if failed is None:
            if self._compiled is None:
                try:
                    self._compiled = compile_fn(self.fn)
                except RuntimeError as err:  # torch.compile on a Python it does not support
                    self._give_up(err)
                    return eager()
            try:
                return self._compiled(*args)
            except torch._dynamo.exc.TorchDynamoException as err:  # raised before any kernel ran
                self._give_up(err)
        return eager()

    def _give_up(self, err: BaseException) -> None:
        global failed
        failed = _reason(err)
        warnings.warn(
            f"compiling {self.fn.__module__.rsplit('.', 1)[-1]}.{self.fn.__name__} failed ({failed}); "
            "the update and batch norm run their eager versions from now on (same results, slower)",
            RuntimeWarning,
            stacklevel=4,
        )
