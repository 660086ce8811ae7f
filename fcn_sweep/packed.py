"""Packed training: K configs of one shape trained at once, each as if it ran alone.

A sweep trains thousands of small networks, and one of them leaves most of an accelerator idle:
a small network's step is a few small matrix multiplies and a long tail of tiny kernels and
Python. Horizontally fused training (Wang et al., MLSys 2021) stacks the weights of K
models into (K, out, in) tensors and runs every layer as one batched matrix multiply, so the
fixed cost per step is paid once for K models.

Members must share what fixes the tensor shapes and the step count: hidden widths, batch norm,
activation, batch size, epochs and training subset (`PACK_FIELDS`). Everything else stays per
member: seed (so init, shuffle order and dropout masks), dropout rates, init, optimizer, lr,
momentum, weight decay, schedule and label smoothing.

Equivalence with `train.fit` is the contract: each member starts where it would alone
(`train.init_model`: the same initial weights, shuffle order and dropout-mask generator), draws
its masks in the same order and sizes, and normalises with its own batch statistics. Its
optimizer and lr schedule are `fit`'s (`optim.Optimizer`: torch's own kernel, called directly) over
views of its slice of the stacked tensors and of the stacked moments. Slice k of a stacked tensor
is contiguous, so the fused kernels update a member in one pass over memory. The epochs, metrics,
best-epoch rule and endings are `train.lifecycle`'s, the same code a solo run goes through.

One kernel call per member, not one elementwise update over the whole stack with per-member
hyperparameters as (K, 1, 1) tensors: an Adam step written as tensor operations makes several
passes over parameters, gradients and moments where the fused kernel makes one, and a pack's
state does not fit in cache, so K fused calls are the faster way (README, Speed).

What differs is the order of some floating-point sums (a batched matrix multiply against a plain
one), so the metrics agree to float tolerance (tests/test_packed.py states the contract); each
tracker receives what `fit` would send it, best weights included as a plain `build_fcn` state dict.

A member whose loss turns NaN leaves the pack at the end of that epoch: NaN cannot leak into the
others, since every operation is per member (batched products, per-channel batch norm, per-member
losses and optimizers), and dropping it stops paying for its compute.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from .config import RunConfig
from .model import ACTIVATIONS, dropout_threshold, keep_mask, param_count
from .optim import Optimizer, zero_moments
from .tracking.tracker import Tracker
from .train import EVAL_BATCH, FitResult, init_model, lifecycle

# Fields that fix the stacked tensors' shapes or the number of steps: equal within a pack.
PACK_FIELDS = ("hidden", "activation", "batch_norm", "batch_size", "epochs", "subset")

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm1d's defaults, which build_fcn keeps


def pack_key(config: RunConfig | Mapping[str, Any]) -> str:
    """Equal for configs that can share a pack. Takes a RunConfig or a config as a dict (the JSON a
    sweep's store holds), so a worker can group pending runs without building their configs."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    return json.dumps([values.get(name) for name in PACK_FIELDS])


# --- the pack ------------------------------------------------------------------------------------


@dataclass
class _Member:
    cfg: RunConfig
    shuffle: torch.Generator
    masks: torch.Generator
    keys: list[tuple[str, str]]  # state-dict prefix of each Linear and of the BatchNorm after it ("" if none)
    update: Optimizer | None = None  # over views of this member's slice of the pack's tensors and moments

    def point_optimizer_at(self, params: list[torch.Tensor], moments: tuple[list, list]) -> None:
        """Build the member's optimizer over `params` (views) and `moments`, or move it there."""
        if self.update is None:
            self.update = Optimizer(params, self.cfg, moments)
        else:
            self.update.params, self.update.moments = params, moments


def _module_keys(model: nn.Sequential) -> list[tuple[str, str]]:
    names = [(name, type(m)) for name, m in model.named_children()]
    linears = [n for n, t in names if t is nn.Linear]
    norms = [n for n, t in names if t is nn.BatchNorm1d]
    return list(itertools.zip_longest(linears, norms, fillvalue=""))


def check_packable(cfgs: Sequence[RunConfig]) -> None:
    if not cfgs:
        raise ValueError("a pack needs at least one config")
    if len({pack_key(c) for c in cfgs}) > 1:
        raise ValueError(f"configs differ in some of {', '.join(PACK_FIELDS)}; pack only configs of one pack_key")


class Pack:
    """The stacked tensors of the live members; index k on the first axis is `members[k]`. A
    `train.Trainer`: `train.lifecycle` runs the epochs."""

    def __init__(self, cfgs: Sequence[RunConfig], device: torch.device):
        check_packable(cfgs)
        members, models = [], []
        for cfg in cfgs:
            model, shuffle, masks = init_model(cfg, device)
            members.append(_Member(cfg, shuffle, masks, _module_keys(model)))
            models.append(model)
        self.param_counts = [param_count(m) for m in models]
        self.members, self.device, self.steps = members, device, 0
        self.batch_norm, self.act = cfgs[0].batch_norm, ACTIVATIONS[cfgs[0].activation]()

        def stack(kind: type[nn.Module], read: Callable[[nn.Module], torch.Tensor]) -> list[torch.Tensor]:
            layers = [[m for m in model if isinstance(m, kind)] for model in models]
            return [torch.stack([read(ls[i]).detach() for ls in layers]).to(device) for i in range(len(layers[0]))]

        # Weights are stored (K, in, out), nn.Linear's transposed, so that both the product and its
        # weight gradient are plain contiguous batched products (no transposed copy per step).
        # Biases and batch-norm affines are (K, 1, width), so they broadcast over the batch axis.
        self.weights = stack(nn.Linear, lambda m: m.weight.t())
        self.biases = stack(nn.Linear, lambda m: m.bias.view(1, -1))
        self.gammas = stack(nn.BatchNorm1d, lambda m: m.weight.view(1, -1))
        self.betas = stack(nn.BatchNorm1d, lambda m: m.bias.view(1, -1))
        self.running_means = stack(nn.BatchNorm1d, lambda m: m.running_mean)
        self.running_vars = stack(nn.BatchNorm1d, lambda m: m.running_var)
        self.moments = zero_moments(self.params)  # every member's optimizer state, stacked like params
        self._attach()

    @property
    def params(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases, *self.gammas, *self.betas]

    def lrs(self) -> list[float]:
        return [m.update.lr for m in self.members]

    def set_epoch(self, done: int) -> None:
        for m in self.members:
            m.update.set_epoch(done)

    def _attach(self) -> None:
        """Per-member views, optimizers and constants, after setup or after members left."""
        for p in self.params:
            p.requires_grad_(True)
        for k, m in enumerate(self.members):
            m.point_optimizer_at([p.detach()[k] for p in self.params], tuple([t[k] for t in ts] for ts in self.moments))
        cfgs = [m.cfg for m in self.members]
        column = lambda values, dtype: torch.tensor(values, dtype=dtype, device=self.device).view(-1, 1, 1)  # noqa: E731
        self.dropout = []
        for rates in zip(*(c.dropout_rates() for c in cfgs), strict=True):
            active = [k for k, rate in enumerate(rates) if rate > 0]
            # A member without dropout here keeps every unit: threshold below any draw, scale 1.
            th, scale = zip(*(dropout_threshold(r) if r > 0 else (-(1 << 15), 1.0) for r in rates), strict=True)
            self.dropout.append((active, column(th, torch.int16), column(scale, torch.float32)) if active else None)
        smoothing = [c.label_smoothing for c in cfgs]
        self.smoothing = column(smoothing, torch.float32).view(-1, 1) if any(smoothing) else None

    def keep(self, ks: list[int]) -> None:
        """Only members ks (ascending) stay; every stacked tensor is cut down to them."""
        idx = torch.tensor(ks, device=self.device)
        take = lambda ts: [t.detach().index_select(0, idx) for t in ts]  # noqa: E731
        self.members = [self.members[k] for k in ks]
        self.weights, self.biases = take(self.weights), take(self.biases)
        self.gammas, self.betas = take(self.gammas), take(self.betas)
        self.running_means, self.running_vars = take(self.running_means), take(self.running_vars)
        self.moments = tuple(take(ts) for ts in self.moments)
        self._attach()

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """Logits (K, B, 10) of inputs (K, B, 784), or of (B, 784) shared by every member."""
        h = x if x.dim() == 3 else x.expand(len(self.members), *x.shape)
        last = len(self.weights) - 1
        for i in range(last):
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if self.batch_norm:
                h = self._batch_norm(h, i, train)
            h = self.act(h)
            if train and self.dropout[i] is not None:
                h = h * self._dropout_mask(h, *self.dropout[i])
        return torch.baddbmm(self.biases[last], h, self.weights[last])

    def _batch_norm(self, h: torch.Tensor, i: int, train: bool) -> torch.Tensor:
        # Member k's feature j is channel k*F + j of a (B, K*F) batch: one native batch-norm call
        # normalises every member with its own statistics and updates its own running averages.
        k, n, f = h.shape
        out = F.batch_norm(
            h.transpose(0, 1).reshape(n, k * f),
            self.running_means[i].view(-1),
            self.running_vars[i].view(-1),
            self.gammas[i].view(-1),
            self.betas[i].view(-1),
            train,
            BN_MOMENTUM,
            BN_EPS,
        )
        return out.view(n, k, f).transpose(0, 1)

    def _dropout_mask(self, h: torch.Tensor, active: list[int], threshold: torch.Tensor, scale: torch.Tensor):
        # model.Dropout's draw, per member from its own generator: ceil(B*F / 4) 64-bit words each.
        k, n, f = h.shape
        words = torch.empty((k, (n * f + 3) // 4), dtype=torch.int64, device=h.device)
        for j in active:
            words[j].random_(-(1 << 63), None, generator=self.members[j].masks)
        bits = words.view(torch.int16)[:, : n * f].view(k, n, f)
        return keep_mask(bits, threshold, scale, h)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        logits = self.forward(x, train=True)
        logp = F.log_softmax(logits, dim=2)
        per_sample = -logp.gather(2, y.unsqueeze(2)).squeeze(2)
        if self.smoothing is not None:  # (1 - eps) * nll + eps * mean over classes of -log p, as torch's
            per_sample = torch.lerp(per_sample, -logp.mean(2), self.smoothing)
        loss = per_sample.mean(1)
        # Each member's loss depends on its own slice only, so the gradient of the sum is, slice by
        # slice, the gradient of each member's own loss. backward() rather than autograd.grad: it
        # lays each gradient out like its parameter (contiguous), and torch's fused CPU optimizers
        # silently misread a non-contiguous gradient (torch 2.14.1).
        for p in self.params:
            p.grad = None
        loss.sum().backward()
        grads = [p.grad.unbind(0) for p in self.params]
        self.steps += 1
        for k, m in enumerate(self.members):
            m.update.step([g[k] for g in grads])
        loss_sum.add_(loss.detach(), alpha=y.shape[1])
        correct.add_((logits.detach().argmax(2) == y).sum(1))

    @torch.inference_mode()
    def evaluate(self, split: data_mod.Split) -> tuple[list[float], list[float]]:
        """Per member: mean loss (without label smoothing) and accuracy, as train.evaluate."""
        k = len(self.members)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        chunk = max(256, EVAL_BATCH // k)  # K members' activations at once stay as small as one's
        for start in range(0, len(split), chunk):
            x, y = split.x[start : start + chunk], split.y[start : start + chunk]
            logits = self.forward(x, train=False)
            loss_sum += F.cross_entropy(logits.transpose(1, 2), y.expand(k, -1), reduction="none").sum(1)
            correct += (logits.argmax(2) == y).sum(1)
        return [s / len(split) for s in loss_sum.tolist()], [c / len(split) for c in correct.tolist()]

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's weights as the state dict of its own `build_fcn(cfg)`, on the CPU."""
        out = {}

        cpu = lambda t: t[k].detach().to("cpu", copy=True)  # noqa: E731
        for i, (linear, norm) in enumerate(self.members[k].keys):
            out[f"{linear}.weight"] = cpu(self.weights[i]).t().contiguous()
            out[f"{linear}.bias"] = cpu(self.biases[i]).view(-1)
            if norm:
                out[f"{norm}.weight"], out[f"{norm}.bias"] = cpu(self.gammas[i]).view(-1), cpu(self.betas[i]).view(-1)
                out[f"{norm}.running_mean"] = cpu(self.running_means[i])
                out[f"{norm}.running_var"] = cpu(self.running_vars[i])
                out[f"{norm}.num_batches_tracked"] = torch.tensor(self.steps)
        return out

    def train_epoch(self, split: data_mod.Split, should_stop: Callable[[], bool]) -> list[tuple[float, float]] | None:
        """Per member (loss, accuracy) over one epoch, or None if stopped part-way; as train.train_epoch."""
        k, n = len(self.members), len(split)
        batch_size = self.members[0].cfg.batch_size
        perms = torch.stack([torch.randperm(n, generator=m.shuffle) for m in self.members]).to(self.device)
        loss_sum = torch.zeros(k, device=self.device)
        correct = torch.zeros(k, device=self.device, dtype=torch.long)
        seen = 0
        for start in data_mod.batch_starts(n, batch_size):
            if should_stop():
                return None
            idx = perms[:, start : start + batch_size]
            flat = idx.reshape(-1)  # index_select: a quarter of the time of x[idx]
            x = split.x.index_select(0, flat).view(k, -1, split.x.shape[1])
            self.train_step(x, split.y[idx], loss_sum, correct)
            seen += idx.shape[1]
        return [(s / seen, c / seen) for s, c in zip(loss_sum.tolist(), correct.tolist(), strict=True)]


def fit_packed(
    cfgs: Sequence[RunConfig],
    trackers: Sequence[Tracker | None] | None = None,
    data: data_mod.FashionMNIST | None = None,
    device: str | torch.device = "cpu",
    should_stop: Callable[[], bool] = lambda: False,
    member_stops: Sequence[Callable[[], bool]] | None = None,
) -> list[FitResult]:
    """Train `cfgs` (all of one `pack_key`) at once; to each tracker and in each result, what `fit`
    would give that config alone. Results come back in the order of `cfgs`.

    A member whose training loss turns NaN or infinite ends as `diverged` after that epoch, as with
    `fit`, and leaves the pack; `should_stop()` ends every member still training as `stopped`,
    dropping the epoch in flight. `member_stops[i]()` turning true (Hyperband stopping one run of a
    sweep) ends member i alone as `stopped` at the end of the epoch: the epoch in flight is shared
    by the whole pack, so finishing it costs that member nothing and keeps its result."""
    check_packable(cfgs)
    data = data or data_mod.load(device, cfgs[0].subset)
    pack = Pack(cfgs, data.device)
    return lifecycle(pack, cfgs, trackers or [None] * len(cfgs), data, should_stop, member_stops)
