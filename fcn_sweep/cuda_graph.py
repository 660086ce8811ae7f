"""A pack's training step on CUDA, captured once as a CUDA graph and replayed.

On a GPU a small network's step is launch-bound: a few hundred kernels of microseconds each, every
one launched from Python. A CUDA graph records the kernels of one step once and replays them with
one launch, so the GPU spends its time on the arithmetic. What a graph needs, and how it is met:

- static inputs: the batch's row indices are copied into a buffer the graph reads; the gather of
  images and labels is inside the graph, from the split's tensors, which stay where they are;
- static outputs: the epoch's loss and correct-count sums are buffers the graph adds into, copied
  out and zeroed at the end of the epoch;
- no host values that change: the step counter (dropout masks, Adam's bias correction) is a
  device tensor advanced inside the graph, and so are the lrs of the stacked update
  (optim.StackedUpdate); a member leaving changes the tensors' shapes and drops the graph. Each
  drop costs one eager warm-up step and one capture.

A graph captured after another shares the previous one's memory pool, and the previous graph is
kept until the new capture has ended: torch asserts (`use_count > 0`, seen on torch 2.11 with an
H200) when a pool is captured into again after every graph that used it was freed.

Capture is the part of CUDA most likely to differ between drivers and torch versions (a kernel
that is not capturable, a library that allocates or synchronises while capturing). If capture or a
replay raises, the pack goes on eagerly with one warning naming the reason: the step is the same
code either way, so the results are what they would have been, only slower.

The last partial batch of an epoch has its own shape and runs eagerly (one step a graph would not
pay back). `FCN_SWEEP_EAGER=1` turns capture off (packed.EAGER_ENV).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from . import data as data_mod

# step(split, idx, loss_sum, correct): one training step on the rows idx (K, B) of split, adding
# each member's loss and correct count into loss_sum and correct (K,): packed.Pack's.
Step = Callable[[data_mod.Split, Tensor, Tensor, Tensor], None]


class CapturedSteps:
    """A pack's step at one batch shape and one split: warm up eagerly, capture, replay; eager for
    good once capture or replay has failed (`failed` holds why)."""

    def __init__(self, step: Step):
        self.step_fn = step
        self.failed: str | None = None
        self._last = None  # the latest graph captured, kept for its memory pool
        self.clear()

    def clear(self) -> None:
        self.graph = None
        self.key: tuple | None = None

    def step(self, split: data_mod.Split, idx: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        if self.failed:
            self.step_fn(split, idx, loss_sum, correct)
            return
        # The split itself, held (not its id, which Python hands to the next object once this one
        # is freed: a graph captured over 2 batches of rows then gathered past their end for a
        # split of 3, a device-side assert on the H200): the captured gather reads its tensors.
        key = (split.x, split.y, tuple(idx.shape))
        if self.graph is None or not self._same(key):
            self._warm_up_and_capture(split, idx, key)  # the warm-up was this batch's step
        else:
            self.idx.copy_(idx, non_blocking=True)
            try:
                self._replay()
            except Exception as err:  # nothing of this step is known to have run: run it eagerly
                self._give_up("replay", err)
                self.step_fn(split, idx, loss_sum, correct)
                return
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

        self._warm_up(step)
        try:
            graph = self._capture(step)
        except Exception as err:  # capture only records kernels: the warm-up's step is the batch's
            self._give_up("capture", err)
            return
        self.graph, self._last, self.key = graph, graph, key

    def _same(self, key: tuple) -> bool:
        x, y, shape = self.key
        return key[0] is x and key[1] is y and key[2] == shape

    def _give_up(self, doing: str, err: BaseException) -> None:
        self.failed = f"{type(err).__name__}: {err}".splitlines()[0]
        self.clear()
        self._last = None
        warnings.warn(
            f"CUDA graph {doing} failed ({self.failed}); this pack trains eagerly (same results, slower)",
            RuntimeWarning,
            stacklevel=2,
        )

    # --- the CUDA calls, one method each (tests replace them to make capture fail on any device) ------

    def _warm_up(self, step: Callable[[], None]) -> None:
        """This batch's real step, eagerly on a side stream: CUDA libraries allocate their workspaces
        on first use, which a capture may not, the optimizers try their kernels, and functions
        compiled by torch.compile (inductor.py) compile here with the very arguments the capture
        passes, so no guard fails and nothing compiles inside a capture (which torch cannot do:
        pytorch/pytorch#131782)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, step: Callable[[], None]):
        """A graph of the step's kernels, recorded without running them."""
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream()
        try:
            with torch.cuda.graph(graph, pool=None if self._last is None else self._last.pool()):
                step()
        except BaseException:
            # torch.cuda.graph leaves its capture stream current when capture_begin or capture_end
            # raises; the eager steps that follow belong on the stream they ran on before.
            torch.cuda.set_stream(stream)
            raise
        return graph

    def _replay(self) -> None:
        self.graph.replay()
