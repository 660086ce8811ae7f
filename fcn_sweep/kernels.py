"""A pack's layers, forward and backward by hand: no autograd in the training step.

Every tensor is stacked over the K members of a pack and laid out feature-major: activations are
(K, features, batch), weights (K, out, in) as nn.Linear keeps them. That layout makes each member's
feature a channel of a (1, K * features, batch) tensor, so torch's native batch norm normalises every
member with its own batch statistics in one call, forward and backward, without a copy; and the
products are plain batched matrix multiplies (BLAS takes the transposed operands as they lie).

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
    saved: tuple[Tensor, Tensor] | None  # batch norm's batch mean and inverse std


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
