"""A pack's layers, forward and backward by hand: no autograd in the training step.

Every tensor is stacked over the K members of a pack and laid out feature-major: activations are
(K, features, batch), weights (K, out, in) as nn.Linear keeps them. That layout makes each member's
feature a channel of a (1, K * features, batch) tensor, so torch's native batch norm normalises every
member with its own batch statistics in one call, forward and backward, without a copy; and the
products are plain batched matrix multiplies (BLAS takes the transposed operands as they lie).

Batch norm has three implementations (`BN_IMPLS`), the same arithmetic to float rounding: `native`
(the default, aten's kernels), `reduce` (reductions over the batch, the contiguous last dim, and
fused elementwise ops) and `compiled` (`reduce` through torch.compile: each reduction fused with
the passes around it). On CUDA the native kernel is built for many samples per channel, and here a
channel has only the batch's 64: `reduce` and `compiled` are the alternatives to measure against it.

Why by hand: autograd records and replays a graph of the step every time, and what it would compute
is known. The backward of each activation and of batch norm is the aten function autograd itself
calls, so the arithmetic is autograd's (tests/test_kernels.py checks every activation, with and
without batch norm and dropout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .inductor import Compiled

aten = torch.ops.aten

BN_MOMENTUM, BN_EPS = 0.1, 1e-5  # nn.BatchNorm1d's defaults, which build_fcn keeps
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default

# name -> (forward, backward(grad of the output, pre-activation, output) -> grad of the pre-activation)
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor, Tensor], Tensor]]] = {
    "relu": (torch.relu, lambda g, pre, out: aten.threshold_backward(g, out, 0)),
    "tanh": (torch.tanh, lambda g, pre, out: aten.tanh_backward(g, out)),
    "gelu": (F.gelu, lambda g, pre, out: aten.gelu_backward(g, pre)),
    "leaky_relu": (
        lambda x: F.leaky_relu(x, LEAKY_SLOPE),
        lambda g, pre, out: aten.leaky_relu_backward(g, pre, LEAKY_SLOPE, False),
    ),
}


@dataclass
class Tape:
    """What one hidden layer's forward pass leaves for its backward pass."""

    inp: Tensor  # (K, in, B) the layer's input
    z: Tensor  # (K, out, B) the product
    pre: Tensor  # the activation's input: z, or z batch-normalised
    out: Tensor  # the activation's output, before dropout
    mask: Tensor | None  # dropout: 0 or the kept units' scale
    saved: tuple[Tensor, Tensor] | None  # batch norm's batch mean and inverse std (in its implementation's shape)


@contextmanager
def matmul_precision(name: str) -> Iterator[None]:
    """torch's fp32 matmul precision set to `name` (a RunConfig's `matmul_precision`) while a pack
    trains or evaluates, and put back after: it is one flag for the whole process, which other
    packs, the bench and a user's own code share. "high" lets CUDA use TF32 tensor cores (10 of
    fp32's 23 mantissa bits in the products, accumulation in fp32); a CPU without such kernels
    computes the same bits either way."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(name)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


def linear(w: Tensor, a: Tensor, bias: Tensor | None) -> Tensor:
    """(K, out, B) from weights (K, out, in) and input (K, in, B), or (in, B) shared by every member
    (evaluation: one product over all members' weights at once)."""
    if a.dim() == 2:
        z = torch.mm(w.view(-1, w.shape[2]), a).view(w.shape[0], w.shape[1], a.shape[1])
        return z if bias is None else z.add_(bias)
    return torch.bmm(w, a) if bias is None else torch.baddbmm(bias, w, a)


@dataclass
class Norm:
    """One batch-norm layer of a pack, as flat (K * width) views: what the aten calls take. Views made
    once per pack (and again when members leave), not twice per layer and step."""

    gamma: Tensor
    beta: Tensor
    mean: Tensor  # the running statistics, updated in place in training
    var: Tensor
    dgamma: Tensor  # where the backward writes the gradients of gamma and beta
    dbeta: Tensor


def batch_norm(z: Tensor, norm: Norm, train: bool) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """(normalised z, saved statistics); in training it updates the running `mean` and `var` in place."""
    y, save_mean, save_invstd = aten.native_batch_norm(
        z.view(1, -1, z.shape[2]), norm.gamma, norm.beta, norm.mean, norm.var, train, BN_MOMENTUM, BN_EPS
    )
    return y.view_as(z), (save_mean, save_invstd)


def batch_norm_backward(dy: Tensor, tape: Tape, norm: Norm) -> Tensor:
    """The grad of z; the grads of gamma and beta go straight into `norm.dgamma` and `norm.dbeta`."""
    flat = dy.view(1, -1, dy.shape[2])
    dz, _, _ = aten.native_batch_norm_backward.out(
        flat, tape.z.view_as(flat), norm.gamma, norm.mean, norm.var, *tape.saved, True, BN_EPS, [True, True, True],
        out0=torch.empty_like(flat), out1=norm.dgamma, out2=norm.dbeta,
    )  # fmt: skip
    return dz.view_as(dy)


def _columns(z: Tensor, *flat: Tensor) -> list[Tensor]:
    """Flat (K * width) tensors as (K, width, 1) views that broadcast over z's batch."""
    return [t.view(z.shape[0], z.shape[1], 1) for t in flat]


def batch_norm_reduce(z: Tensor, norm: Norm, train: bool) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """`batch_norm` by reductions over the batch (z's contiguous last dim) and one fused multiply-add
    over z, y = z * scale + shift as aten's CPU kernel computes it; saved: (mean, invstd) as (K, width, 1).

    Safe under CUDA graph capture: every shape comes from z's, fixed for a captured step; the batch
    statistics and the running ones stay on the device (no .item(), no host value, nothing that
    synchronises), the running statistics are updated in place in the tensors the graph reads, and
    the only Python numbers (momentum, eps, the batch size) are constants of the captured kernels."""
    gamma, beta, running_mean, running_var = _columns(z, norm.gamma, norm.beta, norm.mean, norm.var)
    if train:
        var, mean = torch.var_mean(z, dim=2, keepdim=True, correction=0)
        invstd = var.add(BN_EPS).rsqrt_()
        # As nn.BatchNorm1d: running = (1 - momentum) * running + momentum * batch's, with the batch's
        # unbiased variance (a batch of one never trains: data.batch_starts drops it).
        batch = z.shape[2]
        running_mean.mul_(1 - BN_MOMENTUM).add_(mean, alpha=BN_MOMENTUM)
        running_var.mul_(1 - BN_MOMENTUM).add_(var, alpha=BN_MOMENTUM * batch / max(batch - 1, 1))
    else:
        mean, invstd = running_mean, running_var.add(BN_EPS).rsqrt_()
    scale = gamma * invstd
    shift = torch.addcmul(beta, mean, scale, value=-1)  # beta - mean * scale
    return torch.addcmul(shift, z, scale), (mean, invstd)


def batch_norm_reduce_backward(dy: Tensor, tape: Tape, norm: Norm) -> Tensor:
    """`batch_norm_backward` for `batch_norm_reduce`: with xhat = (z - mean) * invstd,
    dz = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)), dgamma = sum(dy * xhat) and
    dbeta = sum(dy) over the batch, the last two written into `norm.dgamma` and `norm.dbeta`.
    Capture-safe as the forward is: fixed shapes, device tensors only, no host synchronisation."""
    mean, invstd = tape.saved
    gamma, dgamma, dbeta = _columns(dy, norm.gamma, norm.dgamma, norm.dbeta)
    batch = dy.shape[2]
    torch.sum(dy, 2, keepdim=True, out=dbeta)
    xmu = tape.z - mean
    dot = torch.mul(dy, xmu).sum(2, keepdim=True)  # sum(dy * (z - mean)) = sum(dy * xhat) / invstd
    torch.mul(dot, invstd, out=dgamma)
    # dz = a * dy + b * (z - mean) + c, per channel: a = gamma * invstd, b = -a * invstd^2 * dot / B,
    # c = -a * sum(dy) / B; two fused passes over the batch, the first into xmu's own memory.
    a = gamma * invstd
    b = (a * invstd).mul_(invstd).mul_(dot).mul_(-1 / batch)
    c = (a * dbeta).mul_(-1 / batch)
    return torch.addcmul(c, xmu, b, out=xmu).addcmul_(dy, a)


# `reduce` through torch.compile (inductor.py): each reduction fused with the passes around it,
# one or two kernels a direction; aten's `reduce` functions if compiling fails.
_BN_COMPILED = Compiled(batch_norm_reduce), Compiled(batch_norm_reduce_backward)


def batch_norm_compiled(z: Tensor, norm: Norm, train: bool) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    return _BN_COMPILED[0].run(lambda: batch_norm_reduce(z, norm, train), z, norm, train)


def batch_norm_compiled_backward(dy: Tensor, tape: Tape, norm: Norm) -> Tensor:
    return _BN_COMPILED[1].run(lambda: batch_norm_reduce_backward(dy, tape, norm), dy, tape, norm)


@dataclass(frozen=True)
class BatchNormImpl:
    """A batch-norm implementation of a pack: its forward and its backward (the signatures of
    `batch_norm` and `batch_norm_backward`; what `saved` holds is the forward's to choose)."""

    forward: Callable[[Tensor, Norm, bool], tuple[Tensor, tuple[Tensor, Tensor]]]
    backward: Callable[[Tensor, Tape, Norm], Tensor]


BN_IMPLS = {
    "native": BatchNormImpl(batch_norm, batch_norm_backward),
    "reduce": BatchNormImpl(batch_norm_reduce, batch_norm_reduce_backward),
    "compiled": BatchNormImpl(batch_norm_compiled, batch_norm_compiled_backward),
}


def batch_norm_impl(name: str) -> BatchNormImpl:
    if name not in BN_IMPLS:
        raise ValueError(f"batch norm {name!r}: expected one of {', '.join(BN_IMPLS)}")
    return BN_IMPLS[name]


def cross_entropy(logits: Tensor, y: Tensor, smoothing: Tensor | None, target_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per member: the mean loss over the batch (K,) with label smoothing as torch's cross_entropy
    takes it, and its gradient with respect to `logits` (K, classes, B). `smoothing` is (K, 1, 1) or
    None (no member smooths); `target_weight` (K, 1, 1) is minus the weight of the true class in the
    smoothed target, -(1 - smoothing): the gradient is softmax - target, made by adding it at y."""
    classes, batch = logits.shape[1], logits.shape[2]
    logp = torch.log_softmax(logits, 1)
    y = y.unsqueeze(1)
    picked = logp.gather(1, y)
    if smoothing is not None:  # (1 - eps) * nll + eps * mean over classes of -log p
        picked = torch.lerp(picked, logp.mean(1, keepdim=True), smoothing)
    grad = logp.exp_().scatter_add_(1, y, target_weight.expand_as(y))
    if smoothing is not None:
        grad.sub_(smoothing / classes)
    return picked.mean((1, 2)).neg_(), grad.div_(batch)
