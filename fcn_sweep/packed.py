"""The trainer: K runs of one shape trained at once, each as if it ran alone; a run alone is a pack of one.

A sweep trains thousands of small networks, and one of them leaves most of an accelerator idle:
a small network's step is a few small matrix multiplies and a long tail of tiny kernels and
Python. Horizontally fused training (Wang et al., MLSys 2021) stacks the weights of K models into
(K, out, in) tensors and runs every layer as one batched matrix multiply, so the fixed cost of a
step is paid once for K models. Here the rest of the step is stacked too, so that the operations
a step dispatches do not grow with K:

- the layers, forward and backward, are written by hand over the stacked tensors (kernels.py);
- per-member constants (dropout rates, label smoothing) are (K, 1, 1) tensors;
- dropout masks are a function of (member seed, step, position) (rng.py), made for all
  members by one set of operations;
- members sharing an optimizer's hyperparameters sit side by side; on a CPU each group steps with
  one fused kernel call (optim.PackUpdate says why groups), on CUDA each optimizer's members step
  together with their hyperparameters as (K,) tensors (stacked.py), whatever their lrs;
- on CUDA the whole step is captured once as a CUDA graph and replayed (cuda_graph.py).

Members must share what fixes the tensor shapes and the step count (hidden widths, batch norm,
activation, batch size, epochs and training subset) and the matmul precision, which is one
setting of the whole process (`PACK_FIELDS`). Everything else stays per member: seed (so init,
shuffle order and dropout masks), dropout rates, init, optimizer, lr, momentum, weight decay,
schedule and label smoothing.

Equivalence with the run alone is the contract: each member starts where it would alone (the
same initial weights and shuffle order, drawn from its seed), draws the same dropout masks (they
depend on its seed, not on the pack), normalises with its own batch statistics and steps with its
own optimizer. What differs is the order of some floating-point sums (a batched product over K
against one over 1), so the metrics agree to float tolerance (tests/test_packed.py states the
contract); each tracker receives what a run alone would send it, best weights included as a plain
`build_fcn` state dict. A member whose loss turns NaN leaves the pack at the end of that epoch: NaN
cannot leak into the others, since every operation is per member.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from . import kernels
from .compiled import CompiledUpdate
from .config import RunConfig
from .lifecycle import lifecycle
from .model import build_fcn, dropout_threshold, keep_mask, param_count
from .optim import PackUpdate, group_key, zero_moments
from .results import FitResult
from .rng import CounterBits, member_key
from .stacked import StackedUpdate
from .tracking.tracker import Tracker

# Fields that fix the stacked tensors' shapes or the number of steps: equal within a pack.
PACK_FIELDS = ("hidden", "activation", "batch_norm", "batch_size", "epochs", "subset", "matmul_precision")
EVAL_BATCH = 8192
# FCN_SWEEP_EAGER=1 runs the CUDA step op by op instead of replaying a captured graph (debugging,
# profiling); the CPU always runs eagerly.
EAGER_ENV = "FCN_SWEEP_EAGER"
# device type -> the update a pack steps with: grouped fused calls where they are fastest (a CPU:
# 3-4.5x a stacked update, docs/speed.md), per-member tensors where the step is a captured graph
# whose kernel count and lrs should not depend on the members (stacked.py).
UPDATES: dict[str, type] = {"cpu": PackUpdate, "cuda": StackedUpdate}
# name -> a pack's update, for the bench and the profiler to choose (`defaults`); compiled.py says
# why the compiled one is not yet a device's default.
UPDATE_IMPLS: dict[str, type] = {"grouped": PackUpdate, "stacked": StackedUpdate, "compiled": CompiledUpdate}
# device type -> the batch norm of kernels.BN_IMPLS a pack uses: one entry a device, as for the
# update, so that a GPU's measured winner (docs/gpu.md) need not change a CPU's, where `native` is
# as fast as any.
BN_DEFAULTS: dict[str, str] = {"cpu": "native", "cuda": "native"}


def update_name(device_type: str) -> str:
    """The UPDATE_IMPLS name of the update a pack on `device_type` steps with by default."""
    kind = UPDATES.get(device_type, PackUpdate)
    return next(name for name, impl in UPDATE_IMPLS.items() if impl is kind)


def bn_name(device_type: str) -> str:
    """The kernels.BN_IMPLS name of the batch norm a pack on `device_type` uses by default."""
    return BN_DEFAULTS.get(device_type, "native")


@contextmanager
def defaults(device_type: str, update: str | None = None, bn: str | None = None) -> Iterator[None]:
    """Every pack made meanwhile on `device_type` (a bench's variants, a sweep estimate's calibration)
    steps with UPDATE_IMPLS[update] and batch norm `bn` unless told otherwise; None keeps the
    device's default. Both tables are put back after."""
    if update is not None and update not in UPDATE_IMPLS:
        raise ValueError(f"update {update!r}: expected one of {', '.join(UPDATE_IMPLS)}")
    if bn is not None:
        kernels.batch_norm_impl(bn)  # the same check, kernels' message
    before = dict(UPDATES), dict(BN_DEFAULTS)
    if update is not None:
        UPDATES[device_type] = UPDATE_IMPLS[update]
    if bn is not None:
        BN_DEFAULTS[device_type] = bn
    try:
        yield
    finally:
        for table, saved in zip((UPDATES, BN_DEFAULTS), before, strict=True):
            table.clear()
            table.update(saved)


def pack_key(config: RunConfig | Mapping[str, Any]) -> str:
    """Equal for configs that can share a pack. Takes a RunConfig or a config as a dict (the JSON a
    sweep's store holds), so a worker can group pending runs without building their configs."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    return json.dumps([values.get(name) for name in PACK_FIELDS])


def check_packable(cfgs: Sequence[RunConfig]) -> None:
    if not cfgs:
        raise ValueError("a pack needs at least one config")
    if len({pack_key(c) for c in cfgs}) > 1:
        raise ValueError(f"configs differ in some of {', '.join(PACK_FIELDS)}; pack only configs of one pack_key")


def initial_model(cfg: RunConfig) -> nn.Sequential:
    """A run's initial network, drawn from its seed alone (on the CPU, the same on every device)."""
    torch.manual_seed(cfg.seed)
    return build_fcn(cfg)


class Pack:
    """The stacked tensors of the live members, a `lifecycle.Trainer`. Members are kept in the order
    of their optimizer groups (`slot`); every method takes and answers in the order of `cfgs`."""

    def __init__(
        self, cfgs: Sequence[RunConfig], device: torch.device | str, update: type | None = None, bn: str | None = None
    ):
        """`update`: one of UPDATE_IMPLS's, to choose against `UPDATES` (tests, the bench); `bn`:
        a batch-norm implementation of `kernels.BN_IMPLS` (default: the device's, `BN_DEFAULTS`)."""
        check_packable(cfgs)
        self.device = torch.device(device)
        self.update_kind = update or UPDATES.get(self.device.type, PackUpdate)
        self.bn_name = bn or bn_name(self.device.type)
        self.bn = kernels.batch_norm_impl(self.bn_name)
        order = sorted(range(len(cfgs)), key=lambda i: (group_key(cfgs[i]), i))
        self.cfgs = [cfgs[i] for i in order]  # by slot
        self.slot = [order.index(i) for i in range(len(cfgs))]  # run i of `cfgs` -> its slot
        models = [initial_model(c) for c in self.cfgs]
        self.param_counts = [param_count(models[s]) for s in self.slot]
        self.shuffles = [torch.Generator().manual_seed(c.seed) for c in self.cfgs]
        first = self.cfgs[0]
        self.batch_norm, self.act = first.batch_norm, kernels.ACTIVATIONS[first.activation]
        self.hidden_layers, self.widths = len(first.hidden), first.hidden
        self.precision = first.matmul_precision

        def stack(kind: type[nn.Module], read: Callable[[nn.Module], Tensor | None]) -> list[Tensor | None]:
            out: list[Tensor | None] = []
            for same_layer in zip(*([m for m in model if isinstance(m, kind)] for model in models), strict=True):
                ts = [read(m) for m in same_layer]
                out.append(None if ts[0] is None else torch.stack([t.detach() for t in ts]).to(self.device))
            return out

        self.weights = stack(nn.Linear, lambda m: m.weight)  # (K, out, in), nn.Linear's layout
        # (K, out, 1); None for a Linear that feeds batch norm, which has no bias (model.py).
        self.biases = stack(nn.Linear, lambda m: None if m.bias is None else m.bias.view(-1, 1))
        self.gammas = stack(nn.BatchNorm1d, lambda m: m.weight)  # (K, width)
        self.betas = stack(nn.BatchNorm1d, lambda m: m.bias)
        self.running_means = stack(nn.BatchNorm1d, lambda m: m.running_mean)
        self.running_vars = stack(nn.BatchNorm1d, lambda m: m.running_var)
        self.steps = torch.zeros((), dtype=torch.int64, device=self.device)  # on the device: graphs count too
        self.moments = zero_moments(self.params)
        self.graphs = None
        if self.device.type == "cuda" and os.environ.get(EAGER_ENV, "") in ("", "0"):
            from .cuda_graph import CapturedSteps

            self.graphs = CapturedSteps(self.step_on)
        self.epochs_done = 0
        self._attach(steps=0)

    @property
    def params(self) -> list[Tensor]:
        return [*self.weights, *(b for b in self.biases if b is not None), *self.gammas, *self.betas]

    def use_update(self, kind: type) -> None:
        """Step with another of UPDATE_IMPLS from here on, moments and step count kept (the profiler
        compares updates on one pack)."""
        self.update_kind = kind
        self._attach(steps=int(self.steps))

    def _attach(self, steps: int) -> None:
        """Gradients, optimizers and per-member constants, after setup or after members left."""
        self.grads = [torch.empty_like(p) for p in self.params]
        self._grad_of = dict(zip(map(id, self.params), self.grads, strict=True))
        self.update = self.update_kind(self.params, self.grads, self.cfgs, self.moments, steps)
        self.update.set_epoch(self.epochs_done)
        column = lambda values, dtype: torch.tensor(values, dtype=dtype, device=self.device).view(-1, 1, 1)  # noqa: E731
        self.dropout: list[tuple[Tensor, Tensor] | None] = []
        for rates in zip(*(c.dropout_rates() for c in self.cfgs), strict=True):
            # A member without dropout here keeps every unit: threshold below any draw, scale 1.
            th, scale = zip(*(dropout_threshold(r) if r > 0 else (-(1 << 15), 1.0) for r in rates), strict=True)
            active = any(r > 0 for r in rates)
            self.dropout.append((column(th, torch.int16), column(scale, torch.float32)) if active else None)
        smoothing = [c.label_smoothing for c in self.cfgs]
        self.smoothing = column(smoothing, torch.float32) if any(smoothing) else None
        self.target_weight = column([e - 1.0 for e in smoothing], torch.float32)  # kernels.cross_entropy
        self.norms = [
            kernels.Norm(*(t.view(-1) for t in (g, b, m, v, self._grad_of[id(g)], self._grad_of[id(b)])))
            for g, b, m, v in zip(self.gammas, self.betas, self.running_means, self.running_vars, strict=True)
        ]
        self.weights_t = [w.transpose(1, 2) for w in self.weights]  # views: they follow the updates
        self.bits = CounterBits(torch.tensor([member_key(c.seed) for c in self.cfgs], device=self.device))
        if self.graphs is not None:
            self.graphs.clear()

    # --- what the lifecycle asks, in the order of its runs ---------------------------------------

    def lrs(self) -> list[float]:
        by_slot = self.update.lrs()
        return [by_slot[s] for s in self.slot]

    def set_epoch(self, done: int) -> None:
        before, self.epochs_done = self.update.lrs(), done
        self.update.set_epoch(done)
        if self.graphs is not None and not self.update.lrs_in_tensors and self.update.lrs() != before:
            self.graphs.clear()  # the lrs are constants of the captured kernels

    def keep(self, ks: list[int]) -> None:
        """Only runs ks (ascending) stay; every stacked tensor is cut down to them."""
        slots = sorted(self.slot[k] for k in ks)
        self.slot = [slots.index(self.slot[k]) for k in ks]
        idx = torch.tensor(slots, device=self.device)
        take = lambda ts: [t.index_select(0, idx) for t in ts]  # noqa: E731
        self.cfgs = [self.cfgs[s] for s in slots]
        self.shuffles = [self.shuffles[s] for s in slots]
        self.weights, self.gammas, self.betas = take(self.weights), take(self.gammas), take(self.betas)
        self.biases = [None if b is None else b.index_select(0, idx) for b in self.biases]
        self.running_means, self.running_vars = take(self.running_means), take(self.running_vars)
        self.moments = (take(self.moments[0]), take(self.moments[1]))
        self._attach(steps=int(self.steps))

    def state(self, k: int) -> dict[str, Tensor]:
        """Run k's weights as the state dict of its own `build_fcn(cfg)`, on the CPU."""
        s, out, layer = self.slot[k], {}, 0
        cpu = lambda t: t[s].detach().to("cpu", copy=True)  # noqa: E731
        for name, m in build_fcn(self.cfgs[s]).named_children():
            if isinstance(m, nn.Linear):
                out[f"{name}.weight"] = cpu(self.weights[layer])
                if self.biases[layer] is not None:
                    out[f"{name}.bias"] = cpu(self.biases[layer]).view(-1)
                layer += 1
            elif isinstance(m, nn.BatchNorm1d):
                stats = (self.gammas, self.betas, self.running_means, self.running_vars)
                for key, t in zip(("weight", "bias", "running_mean", "running_var"), stats, strict=True):
                    out[f"{name}.{key}"] = cpu(t[layer - 1])
                out[f"{name}.num_batches_tracked"] = self.steps.detach().to("cpu", copy=True)
        return out

    # --- the step --------------------------------------------------------------------------------

    def forward(self, a: Tensor, train: bool) -> tuple[Tensor, list[kernels.Tape], Tensor]:
        """(logits (K, 10, B), the tapes of the hidden layers, the last layer's input) of inputs a:
        (K, 784, B), or (784, B) shared by every member."""
        tapes = []
        masks = self.dropout_masks(a.shape[-1]) if train else [None] * self.hidden_layers
        for i in range(self.hidden_layers):
            z = kernels.linear(self.weights[i], a, self.biases[i])
            pre, saved = z, None
            if self.batch_norm:
                pre, saved = self.bn.forward(z, self.norms[i], train)
            out, mask = self.act[0](pre), masks[i]
            tapes.append(kernels.Tape(a, z, pre, out, mask, saved))
            a = out if mask is None else out * mask
        return kernels.linear(self.weights[-1], a, self.biases[-1]), tapes, a

    def dropout_masks(self, batch: int) -> list[Tensor | None]:
        """Each hidden layer's dropout mask (K, width, batch) for this step, or None where no member
        drops: the bits of every such layer in one draw (rng.py), cut into the layers' blocks."""
        sizes = [width * batch if rates else 0 for width, rates in zip(self.widths, self.dropout, strict=True)]
        if not any(sizes):
            return [None] * self.hidden_layers
        bits, start, masks = self.bits.draw(self.steps, sum(sizes)), 0, []
        for width, size, rates in zip(self.widths, sizes, self.dropout, strict=True):
            masks.append(keep_mask(bits[:, start : start + size].view(-1, width, batch), *rates) if size else None)
            start += size
        return masks

    def backward(self, tapes: list[kernels.Tape], last_input: Tensor, dlogits: Tensor) -> None:
        """Each parameter's gradient of each member's own mean loss, into `self.grads`."""
        grad = lambda t: self._grad_of[id(t)]  # noqa: E731
        torch.bmm(dlogits, last_input.transpose(1, 2), out=grad(self.weights[-1]))
        torch.sum(dlogits, 2, keepdim=True, out=grad(self.biases[-1]))
        dh = torch.bmm(self.weights_t[-1], dlogits)
        for i in reversed(range(self.hidden_layers)):
            tape = tapes[i]
            if tape.mask is not None:
                dh.mul_(tape.mask)
            dz = self.act[1](dh, tape.pre, tape.out)
            if self.batch_norm:
                dz = self.bn.backward(dz, tape, self.norms[i])
            else:
                torch.sum(dz, 2, keepdim=True, out=grad(self.biases[i]))
            torch.bmm(dz, tape.inp.transpose(1, 2), out=grad(self.weights[i]))
            if i:
                dh = torch.bmm(self.weights_t[i], dz)

    def train_step(self, x: Tensor, y: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        """One step of every member on its own batch: x (K, B, 784), y (K, B)."""
        logits, tapes, last_input = self.forward(x.transpose(1, 2), train=True)
        loss, dlogits = kernels.cross_entropy(logits, y, self.smoothing, self.target_weight)
        self.backward(tapes, last_input, dlogits)
        self.update.step()
        self.steps.add_(1)
        loss_sum.add_(loss, alpha=y.shape[1])
        correct.add_((logits.argmax(1) == y).sum(1))

    def step_on(self, split: data_mod.Split, idx: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        """One step on the rows idx (K, B) of `split`: the gather and the step, as a graph captures them."""
        self.train_step(*self.batch(split, idx), loss_sum, correct)

    def train_epoch(self, split: data_mod.Split, should_stop: Callable[[], bool]) -> list[tuple[float, float]] | None:
        """Per run (loss, accuracy) over one epoch, or None if stopped part-way."""
        with kernels.matmul_precision(self.precision):
            return self._train_epoch(split, should_stop)

    def _train_epoch(self, split: data_mod.Split, should_stop: Callable[[], bool]) -> list[tuple[float, float]] | None:
        k, n = len(self.cfgs), len(split)
        batch_size = self.cfgs[0].batch_size
        perms = torch.stack([torch.randperm(n, generator=g) for g in self.shuffles]).to(self.device)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        seen = 0
        for start in data_mod.batch_starts(n, batch_size):
            if should_stop():
                return None
            idx = perms[:, start : start + batch_size]
            if self.graphs is not None and idx.shape[1] == batch_size:
                self.graphs.step(split, idx, loss_sum, correct)
            else:  # the CPU, or the last partial batch: one eager step
                self.step_on(split, idx, loss_sum, correct)
            seen += idx.shape[1]
        by_slot = [(s / seen, c / seen) for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]
        return [by_slot[s] for s in self.slot]

    @staticmethod
    def batch(split: data_mod.Split, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Each member's rows: idx (K, B) -> x (K, B, 784), y (K, B). index_select: a quarter of x[idx]'s time."""
        flat = idx.reshape(-1)
        x = split.x.index_select(0, flat).view(*idx.shape, split.x.shape[1])
        return x, split.y.index_select(0, flat).view(idx.shape)

    @torch.inference_mode()
    def evaluate(self, split: data_mod.Split) -> tuple[list[float], list[float]]:
        """Per run: mean loss (without label smoothing) and accuracy."""
        with kernels.matmul_precision(self.precision):
            return self._evaluate(split)

    def _evaluate(self, split: data_mod.Split) -> tuple[list[float], list[float]]:
        k = len(self.cfgs)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        chunk = max(256, EVAL_BATCH // k)  # K members' activations at once stay as small as one's
        for start in range(0, len(split), chunk):
            x, y = split.x[start : start + chunk], split.y[start : start + chunk]
            logits = self.forward(x.t(), train=False)[0]
            loss_sum += F.cross_entropy(logits, y.expand(k, -1), reduction="none").sum(1)
            correct += (logits.argmax(1) == y).sum(1)
        losses, accs = [s / len(split) for s in loss_sum.tolist()], [c / len(split) for c in correct.tolist()]
        return [losses[s] for s in self.slot], [accs[s] for s in self.slot]


def fit_packed(
    cfgs: Sequence[RunConfig],
    trackers: Sequence[Tracker | None] | None = None,
    data: data_mod.FashionMNIST | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
    member_stops: Sequence[Callable[[], bool]] | None = None,
) -> list[FitResult]:
    """Train `cfgs` (all of one `pack_key`) at once; to each tracker and in each result, what that
    config trained alone would give. Results come back in the order of `cfgs`.

    A member whose training loss turns NaN or infinite ends as `diverged` after that epoch and
    leaves the pack; `should_stop()` ends every member still training as `stopped`, dropping the
    epoch in flight. `member_stops[i]()` turning true (Hyperband stopping one run of a sweep) ends
    member i alone as `stopped` at the end of the epoch: the epoch in flight is shared by the whole
    pack, so finishing it costs that member nothing and keeps its result."""
    check_packable(cfgs)
    data = data or data_mod.load(device, cfgs[0].subset)
    pack = Pack(cfgs, data.device)
    return lifecycle(pack, cfgs, trackers or [None] * len(cfgs), data, should_stop, member_stops)
