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

from collections.abc import Callable
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


def linear(w: Tensor, a: Tensor, bias: Tensor | None) -> Tensor:
    """(K, out, B) from weights (K, out, in) and input (K, in, B), or (in, B) shared by every member
    (evaluation: one product over all members' weights at once)."""
    if a.dim() == 2:
        z = torch.mm(w.view(-1, w.shape[2]), a).view(w.shape[0], w.shape[1], a.shape[1])
        return z if bias is None else z.add_(bias)
    return torch.bmm(w, a) if bias is None else torch.baddbmm(bias, w, a)


def batch_norm(z: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, var: Tensor, train: bool):
    """(normalised z, saved statistics); in training it updates the running `mean` and `var` in place."""
    flat = z.view(1, -1, z.shape[2])
    y, save_mean, save_invstd = aten.native_batch_norm(
        flat, gamma.view(-1), beta.view(-1), mean.view(-1), var.view(-1), train, BN_MOMENTUM, BN_EPS
    )
    return y.view_as(z), (save_mean, save_invstd)


def batch_norm_backward(dy: Tensor, tape: Tape, gamma: Tensor, mean: Tensor, var: Tensor):
    """(grad of z, grad of gamma, grad of beta), the last two flat (K * out)."""
    flat = lambda t: t.view(1, -1, t.shape[2])  # noqa: E731
    dz, dgamma, dbeta = aten.native_batch_norm_backward(
        flat(dy), flat(tape.z), gamma.view(-1), mean.view(-1), var.view(-1), *tape.saved, True, BN_EPS,
        [True, True, True],
    )  # fmt: skip
    return dz.view_as(dy), dgamma, dbeta


def cross_entropy(logits: Tensor, y: Tensor, smoothing: Tensor | None) -> tuple[Tensor, Tensor]:
    """Per member: the mean loss over the batch (K,) with label smoothing as torch's cross_entropy
    takes it, and its gradient with respect to `logits` (K, classes, B). `smoothing` is (K, 1, 1)."""
    classes, batch = logits.shape[1], logits.shape[2]
    logp = torch.log_softmax(logits, 1)
    target = torch.zeros_like(logits).scatter_(1, y.unsqueeze(1), 1.0)
    per_sample = -logp.gather(1, y.unsqueeze(1))
    if smoothing is not None:  # (1 - eps) * nll + eps * mean over classes of -log p
        per_sample = torch.lerp(per_sample, -logp.mean(1, keepdim=True), smoothing)
        target.mul_(1 - smoothing).add_(smoothing / classes)
    grad = logp.exp_().sub_(target).div_(batch)
    return per_sample.mean((1, 2)), grad
