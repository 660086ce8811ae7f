"""The stacked update (stacked.py) compiled: one kernel per stacked parameter tensor, whatever K is.

`stacked.StackedUpdate` is a chain of `torch._foreach_*` calls: a fixed handful of kernels whatever
K is, but each a pass over every parameter of the pack, about 18 for Adam. On a GPU this update is
bound by memory traffic (at K=512 of 1024-256 each pass moves 2.2 GB), so the number of passes is
its time. torch's fused Adam makes one pass that reads parameter, gradient and both moments and
writes three of them back (7 tensor-sized transfers), but takes one lr for all its tensors.

Here each optimizer's formula, written over one parameter with its members' hyperparameters as
(K, 1, ...) columns, goes through `torch.compile`: Inductor fuses the whole chain into one kernel per
tensor (Triton on CUDA, C++ on the CPU) that reads the hyperparameters per member and the
tensors once. The arithmetic is `stacked`'s (the same formulas, so members equal their configs
alone to float tolerance), the lrs stay device tensors (a captured graph reads a new epoch's), and
the kernels are compiled at a pack's first step, which `cuda_graph` runs eagerly before capturing.

Compiling, and what happens when it fails, is inductor.py's: the foreach chain of `stacked` then
steps the pack (the same results to float rounding) after one warning that names the reason.

Opt-in (`fcn-sweep bench --update compiled`; packed.UPDATE_IMPLS): it has not yet been measured on
a GPU, and on the CPU torch's fused kernels per group of equal hyperparameters are faster still.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import inductor
from .inductor import Compiled
from .stacked import ALPHA, BETA2, EPS, STACKED, StackedUpdate


def _col(h: Tensor, p: Tensor) -> Tensor:
    """The (K,) hyperparameter `h` as a column that broadcasts over the rows of parameter `p`."""
    return h.view(-1, *[1] * (p.dim() - 1))


def _decayed(g: Tensor, p: Tensor, wd: Tensor, decays: bool) -> Tensor:
    return g + _col(wd, p) * p if decays else g


def _sgd(ps, gs, m1s, m2s, lr, momentum, wd, step, decays: bool) -> None:
    for p, g, m1 in zip(ps, gs, m1s, strict=True):
        m1.mul_(_col(momentum, p)).add_(_decayed(g, p, wd, decays))
        p.sub_(_col(lr, p) * m1)


def _adam_family(ps, gs, m1s, m2s, lr, beta1, wd, step, decays: bool, decoupled: bool) -> None:
    step_size = lr / (1 - beta1**step)
    inv_c = torch.rsqrt(1 - torch.full_like(lr, BETA2) ** step)  # 1 / sqrt(1 - beta2^t)
    for p, g, m1, m2 in zip(ps, gs, m1s, m2s, strict=True):
        if decoupled and decays:
            p.mul_(1 - _col(lr * wd, p))
        d = g if decoupled else _decayed(g, p, wd, decays)
        m1.lerp_(d, 1 - _col(beta1, p))
        m2.mul_(BETA2).addcmul_(d, d, value=1 - BETA2)
        p.sub_(_col(step_size, p) * m1 / (m2.sqrt() * _col(inv_c, p) + EPS))


# Adam and AdamW are two functions, not one closure: torch.compile keeps its compiled variants per
# code object, and one shared code object would spend its recompile limit on both.
def _adam(ps, gs, m1s, m2s, lr, beta1, wd, step, decays: bool) -> None:
    _adam_family(ps, gs, m1s, m2s, lr, beta1, wd, step, decays, decoupled=False)


def _adamw(ps, gs, m1s, m2s, lr, beta1, wd, step, decays: bool) -> None:
    _adam_family(ps, gs, m1s, m2s, lr, beta1, wd, step, decays, decoupled=True)


def _rmsprop(ps, gs, m1s, m2s, lr, momentum, wd, step, decays: bool) -> None:
    for p, g, m1, m2 in zip(ps, gs, m1s, m2s, strict=True):
        d = _decayed(g, p, wd, decays)
        m2.mul_(ALPHA).addcmul_(d, d, value=1 - ALPHA)
        m1.mul_(_col(momentum, p)).add_(d / (m2.sqrt() + EPS))
        p.sub_(_col(lr, p) * m1)


# name -> the update of one family, written for Inductor to fuse; the same names as stacked.STACKED
FORMULAS: dict[str, Callable[..., None]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
}
_COMPILED = {name: Compiled(fn) for name, fn in FORMULAS.items()}


class CompiledUpdate(StackedUpdate):
    """StackedUpdate whose families step through their compiled formula; `failed` says why not
    (inductor.py: then the foreach chain, `stacked.STACKED`)."""

    @property
    def failed(self) -> str | None:
        return inductor.failed

    def step(self) -> None:
        self.step_count.add_(1)
        for f in self.families:
            args = (f.params, f.grads, f.m1, f.m2, f.lr, f.momentum, f.weight_decay, f.step, f.decays)
            _COMPILED[f.name].run(lambda f=f: STACKED[f.name](f), *args)
