"""A pack's training step on CUDA, captured once as a CUDA graph and replayed.

On a GPU a small network's step is launch-bound: a few hundred kernels of microseconds each, every
one launched from Python. A CUDA graph records the kernels of one step once and replays them with
one launch, so the GPU spends its time on the arithmetic. What a graph needs, and how it is met:

- static inputs: the batch's row indices are copied into a buffer the graph reads; the gather of
  images and labels is inside the graph, from the split's tensors, which stay where they are;
- static outputs: the epoch's loss and correct-count sums are buffers the graph adds into, copied
  out and zeroed at the end of the epoch;
- no host values that change: the step counter (dropout masks, Adam's bias correction) is a
  device tensor advanced inside the graph; the lrs are constants of the optimizer kernels, so a
  change of lr (a schedule, at an epoch's end) drops the graph, as does a member leaving (the
  tensors' shapes change). Each drop costs one eager warm-up step and one capture.

The last partial batch of an epoch has its own shape and runs eagerly (one step a graph would not
pay back). `FCN_SWEEP_EAGER=1` turns capture off (packed.EAGER_ENV).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import data as data_mod

# step(split, idx, loss_sum, correct): one training step on the rows idx (K, B) of split, adding
# each member's loss and correct count into loss_sum and correct (K,): packed.Pack's.
Step = Callable[[data_mod.Split, Tensor, Tensor, Tensor], None]


class CapturedSteps:
    """A pack's step at one batch shape and one split: warm up eagerly, capture, replay."""

    def __init__(self, step: Step):
        self.step_fn = step
        self.pool = torch.cuda.graph_pool_handle()  # graphs captured one after the other share memory
        self.clear()

    def clear(self) -> None:
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: tuple | None = None

    def step(self, split: data_mod.Split, idx: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        key = (id(split.x), tuple(idx.shape))
        if self.graph is None or key != self.key:
            self._warm_up_and_capture(split, idx, key)  # the warm-up was this batch's step
        else:
            self.idx.copy_(idx, non_blocking=True)
            self.graph.replay()
        # The graph's sums are its own buffers; hand them over at once, so an epoch can end anywhere.
        loss_sum.add_(self.loss_sum)
        correct.add_(self.correct)
        self.loss_sum.zero_()
        self.correct.zero_()

    def _warm_up_and_capture(self, split: data_mod.Split, idx: Tensor, key: tuple) -> None:
        k = idx.shape[0]
        self.idx = idx.clone()
        self.loss_sum = torch.zeros(k, device=idx.device)
        self.correct = torch.zeros(k, device=idx.device, dtype=torch.long)

        def step() -> None:
            self.step_fn(split, self.idx, self.loss_sum, self.correct)

        # Warm-up: this batch's real step, eagerly on a side stream (CUDA libraries allocate their
        # workspaces on first use, which a capture may not; the optimizers try their kernels).
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        # Capture records the step's kernels without running them; each replay runs them.
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool):
            step()
        self.key = key
