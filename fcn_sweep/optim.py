"""Optimizers and lr schedules as lookup tables keyed by the names RunConfig accepts.

`momentum` is one knob with one meaning across optimizers, the first-moment decay: SGD's
momentum, Adam's and AdamW's beta1, RMSprop's momentum. The study sweeps it for all three.

`Optimizer` is the optimizer of a run, or of a group of a pack's runs sharing hyperparameters
(`PackUpdate`): its hyperparameters are the param group torch's optimizer of that name would hold
(`GROUPS`), and its step calls the multi-tensor kernel torch's own `step()` calls (`_fused_*` for
SGD, Adam and AdamW; RMSprop has no fused kernel and takes torch's `foreach` sequence) with the same
arguments, so the arithmetic is torch's, bit for bit (tests/test_optim.py). Why not torch's
optimizer objects: `step()`'s Python (per-parameter state lookups, grouping tensors by device,
hooks, profiler records) is a visible share of a small network's step, paid once per group of
members per step in a pack (`PackUpdate`); and constructing the first one imports `torch._dynamo`, a
cost in every process's start (each `wandb agent` run is a process). torch's CPU default, a Python
loop over parameters, would cost more still. docs/speed.md has the figures.

Those kernels are private: a torch version may lack one (CPU fused kernels arrived in 2.4), change
its signature, or refuse a device. The first step finds out: if the kernel call raises, the
parameters and moments are put back as they were, and from then on the optimizer steps through
the public `torch.optim` class of the same name on its single-tensor path (`foreach=False`), over
the same moments, so it computes what `torch.optim.Adam(..., foreach=False)` would, bit for bit.
That is slower, not different in kind, and a warning says so once per optimizer and device.

The lr schedule is a factor of the configured lr per completed epoch (`SCHEDULES`); cosine is
the closed form torch documents for CosineAnnealingLR (eta_min 0, T_max = epochs), stepped once
per epoch.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from .config import RunConfig

# name -> the param group torch.optim's optimizer of that name keeps for this config.
GROUPS: dict[str, Callable[[RunConfig], dict]] = {
    "sgd": lambda c: {
        "lr": c.lr, "momentum": c.momentum, "dampening": 0.0, "nesterov": False, "weight_decay": c.weight_decay
    },
    "adam": lambda c: {"lr": c.lr, "betas": (c.momentum, 0.999), "eps": 1e-8, "weight_decay": c.weight_decay},
    "adamw": lambda c: {"lr": c.lr, "betas": (c.momentum, 0.999), "eps": 1e-8, "weight_decay": c.weight_decay},
    "rmsprop": lambda c: {
        "lr": c.lr, "alpha": 0.99, "eps": 1e-8, "momentum": c.momentum, "weight_decay": c.weight_decay
    },
}  # fmt: skip

# name -> fn(epochs done, epochs in all): the factor on the configured lr for the next epoch.
SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "constant": lambda done, total: 1.0,
    "cosine": lambda done, total: (1 + math.cos(math.pi * done / total)) / 2,
}


# --- the update ----------------------------------------------------------------------------------

# Per parameter, zero-initialised as torch initialises its state: (SGD's and RMSprop's momentum
# buffer or Adam's exp_avg, Adam's exp_avg_sq or RMSprop's square_avg).
Moments = tuple[list[Tensor], list[Tensor]]
Update = Callable[[dict, list[Tensor], list[Tensor], Moments, Tensor], None]


def _sgd(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: Tensor) -> None:
    momentum = group["momentum"]
    torch._fused_sgd_(
        params,
        grads,
        moments[0] if momentum else [],
        weight_decay=group["weight_decay"],
        momentum=momentum,
        lr=group["lr"],
        dampening=group["dampening"],
        nesterov=group["nesterov"],
        maximize=False,
        # torch's first step copies the gradient into the buffer; the buffer starts at zero and
        # dampening is 0, so momentum * 0 + gradient is the same bits, and one captured CUDA graph
        # serves every step.
        is_first_step=False,
    )


def _adam(kernel_name: str) -> Update:
    def update(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: Tensor) -> None:
        beta1, beta2 = group["betas"]
        # The kernel reads each parameter's step count from a tensor on the parameters' device, as
        # torch's fused Adam keeps it (a CPU tensor would be refused by the CUDA kernel); counted
        # there too (`Optimizer.step`), so that a CUDA graph replaying the step counts on.
        kernel = getattr(torch, kernel_name)
        kernel(params, grads, *moments, [], [step] * len(params), lr=group["lr"], beta1=beta1, beta2=beta2,
               weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False)  # fmt: skip

    return update


def _rmsprop(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: Tensor) -> None:
    # torch's _multi_tensor_rmsprop, uncentered, op for op.
    buffers, square_avgs = moments
    lr, alpha, momentum, weight_decay = group["lr"], group["alpha"], group["momentum"], group["weight_decay"]
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, group["eps"])
    if momentum > 0:
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_addcdiv_(buffers, grads, avg)
        torch._foreach_add_(params, buffers, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)


# name -> fn(param group, params, grads, moments, steps taken including this one as a tensor on the
# parameters' device): torch's update of that optimizer
UPDATES: dict[str, Update] = {
    "sgd": _sgd,
    "adam": _adam("_fused_adam_"),
    "adamw": _adam("_fused_adamw_"),
    "rmsprop": _rmsprop,
}


def zero_moments(params: Iterable[Tensor]) -> Moments:
    params = list(params)
    return [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]


# --- the public fallback -------------------------------------------------------------------------

# name -> (torch.optim class name, its state keys for our two moments). `step` is kept beside them.
PUBLIC: dict[str, tuple[str, tuple[str, str]]] = {
    "sgd": ("SGD", ("momentum_buffer", "")),
    "adam": ("Adam", ("exp_avg", "exp_avg_sq")),
    "adamw": ("AdamW", ("exp_avg", "exp_avg_sq")),
    "rmsprop": ("RMSprop", ("momentum_buffer", "square_avg")),
}

# (optimizer name, device type) -> why its kernel failed; filled on a first step that raised.
FALLBACKS: dict[tuple[str, str], str] = {}


def _public(name: str) -> Callable[[dict, list[Tensor], list[Tensor], Moments, int], None]:
    """The same update through torch.optim's public class, built over this step's params and moments
    (a packed member's views move when the pack shrinks, so nothing is kept between steps)."""
    cls_name, (first, second) = PUBLIC[name]

    def update(group: dict, params: list[Tensor], grads: list[Tensor], moments: Moments, step: Tensor) -> None:
        opt = getattr(torch.optim, cls_name)(params, **group, foreach=False)
        keep = [p.grad for p in params]
        for p, g, m1, m2 in zip(params, grads, *moments, strict=True):
            p.grad = g
            # torch increments `step` before using it; SGD's buffer starts as the first gradient, the
            # same bits as 0 * momentum + gradient.
            opt.state[p] = {"step": step.detach().cpu() - 1, first: m1} | ({second: m2} if second else {})
        opt.step()
        for p, g in zip(params, keep, strict=True):
            p.grad = g

    return update


class Optimizer:
    """A run's optimizer over `params` (see the module docstring). `moments` may be given as views
    of larger tensors (a pack's stacked state); by default they are allocated here. `steps`: the
    steps already taken over those moments (a pack rebuilt after members left). `step_count`: a
    counter of those steps on the parameters' device shared with other optimizers, which its owner
    advances before each `step` (a pack's groups step together: one increment, not one a group)."""

    def __init__(
        self,
        params: Iterable[Tensor],
        cfg: RunConfig,
        moments: Moments | None = None,
        steps: int = 0,
        step_count: Tensor | None = None,
    ):
        self.cfg, self.params = cfg, list(params)
        self.group, self.fn = GROUPS[cfg.optimizer](cfg), UPDATES[cfg.optimizer]
        self.moments = moments or zero_moments(self.params)
        device = self.params[0].device if self.params else torch.device("cpu")
        self._counts = step_count is None  # whether `step` advances the counter itself
        self.step_count = torch.full((), float(steps), device=device) if step_count is None else step_count
        self._key = (cfg.optimizer, device.type)
        self._tried = steps > 0
        if self._key in FALLBACKS:
            self.fn = _public(cfg.optimizer)

    @property
    def lr(self) -> float:
        return self.group["lr"]

    def set_epoch(self, done: int) -> None:
        """Set the lr for the epoch after `done` completed epochs."""
        self.group["lr"] = self.cfg.lr * SCHEDULES[self.cfg.schedule](done, self.cfg.epochs)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, grads: list[Tensor] | None = None) -> None:
        """One update from `grads` (default: each parameter's .grad)."""
        grads = [p.grad for p in self.params] if grads is None else grads
        if self._counts:
            self.step_count.add_(1)
        if not self._tried:
            self._tried = True
            self._first_step(grads)
        else:
            self.fn(self.group, self.params, grads, self.moments, self.step_count)

    def _first_step(self, grads: list[Tensor]) -> None:
        """The kernel's first call, undone and replaced by torch.optim's public class if it raises."""
        state = (*self.params, *self.moments[0], *self.moments[1], self.step_count)
        saved = [t.clone() for t in state]
        try:
            self.fn(self.group, self.params, grads, self.moments, self.step_count)
        except Exception as err:  # missing (AttributeError), wrong signature (TypeError), no kernel for the device
            for t, s in zip(state, saved, strict=True):
                t.copy_(s)
            if self._key not in FALLBACKS:
                FALLBACKS[self._key] = f"{type(err).__name__}: {err}".splitlines()[0]
                cls_name = PUBLIC[self.cfg.optimizer][0]
                warnings.warn(
                    f"torch {torch.__version__} cannot run fcn-sweep's {self.cfg.optimizer} kernel on "
                    f"{self._key[1]} ({FALLBACKS[self._key]}); using torch.optim.{cls_name}(foreach=False) instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
            self.fn = _public(self.cfg.optimizer)
            self.fn(self.group, self.params, grads, self.moments, self.step_count)


# --- a pack's update -----------------------------------------------------------------------------


def group_key(cfg: RunConfig) -> tuple:
    """Equal for runs whose updates take the same hyperparameters at every step."""
    return (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.schedule, cfg.epochs)


class PackUpdate:
    """The optimizers of a pack's members over stacked (K, ...) tensors. The pack orders members so
    that those of one `group_key` sit side by side; each group then steps with one kernel call
    over contiguous slices of the stacked parameters, gradients and moments, whatever its size.

    Why groups and not one elementwise update with per-member (K, 1, 1) hyperparameters, whose
    operation count would not depend on the members at all: the fused kernel makes one pass over
    parameters, gradients and moments, and such an update makes six or more, each a full pass over
    memory; measured on a CPU it is 3x slower with preallocated buffers and worse without. A pack
    whose members share their hyperparameters (a run alone, seeds of one config, a grid's cell)
    costs one call whatever K; a bayes sweep with a continuous lr gives every member its own group,
    one kernel call each (docs/speed.md). On CUDA a pack uses stacked.StackedUpdate instead."""

    lrs_in_tensors = False  # the lrs are arguments of the kernel calls: constants of a captured graph

    def __init__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        cfgs: list[RunConfig],
        moments: Moments | None = None,
        steps: int = 0,
    ):
        """`grads`: where the step finds each parameter's gradient, stacked like it (the same
        tensors every step, so each group's slices of them are taken once)."""
        self.moments = moments or zero_moments(params)
        self.step_count = torch.full((), float(steps), device=params[0].device)
        self.groups: list[tuple[int, int, Optimizer, list[Tensor]]] = []
        start = 0
        for _, members in itertools.groupby(cfgs, key=group_key):
            end = start + len(list(members))
            rows = slice(start, end)
            params_, grads_, *moments = [[t[rows] for t in ts] for ts in (params, grads, *self.moments)]
            opt = Optimizer(params_, cfgs[start], tuple(moments), steps, self.step_count)
            self.groups.append((start, end, opt, grads_))
            start = end
        if start != len(cfgs) or len(self.groups) != len({group_key(c) for c in cfgs}):
            raise ValueError("PackUpdate needs the configs ordered by group_key")

    def lrs(self) -> list[float]:
        return [opt.lr for start, end, opt, _ in self.groups for _ in range(start, end)]

    def set_epoch(self, done: int) -> None:
        for _, _, opt, _ in self.groups:
            opt.set_epoch(done)

    def step(self) -> None:
        self.step_count.add_(1)
        for _, _, opt, grads in self.groups:
            opt.step(grads)
