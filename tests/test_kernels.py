"""The pack's hand-written layers (kernels.py) against autograd, and its dropout masks (rng.py)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_sweep import kernels
from fcn_sweep.config import ACTIVATIONS, RunConfig
from fcn_sweep.model import build_fcn
from fcn_sweep.packed import Pack

CFG = RunConfig(hidden=(48, 24), batch_size=32, label_smoothing=0.1, init="xavier_uniform")


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_the_hand_written_step_is_autograds(activation, batch_norm, dropout):
    cfgs = [replace(CFG, activation=activation, batch_norm=batch_norm, dropout=dropout, seed=s) for s in (0, 1)]
    cfgs[1] = replace(cfgs[1], label_smoothing=0.0, dropout=(dropout, 0.0))
    pack = Pack(cfgs, "cpu")
    torch.manual_seed(5)
    x, y = torch.randn(2, CFG.batch_size, 784), torch.randint(0, 10, (2, CFG.batch_size))
    before = [pack.state(k) for k in range(2)]
    logits, tapes, last = pack.forward(x.transpose(1, 2), train=True)
    loss, dlogits = kernels.cross_entropy(logits, y, pack.smoothing, pack.target_weight)
    pack.backward(tapes, last, dlogits)
    grads = dict(zip(map(id, pack.params), pack.grads, strict=True))
    for k in range(2):
        s = pack.slot[k]
        masks = [None if t.mask is None else t.mask[s].t() for t in tapes]
        theirs, model = autograd_step(pack.cfgs[s], before[k], x[s], y[s], masks)
        torch.testing.assert_close(loss[s], theirs.detach(), rtol=1e-6, atol=1e-7)
        linears = [m for m in model if isinstance(m, nn.Linear)]
        norms = [m for m in model if isinstance(m, nn.BatchNorm1d)]
        for i, m in enumerate(linears):
            torch.testing.assert_close(grads[id(pack.weights[i])][s], m.weight.grad, rtol=1e-4, atol=1e-6)
            if m.bias is not None:
                torch.testing.assert_close(grads[id(pack.biases[i])][s].view(-1), m.bias.grad, rtol=1e-4, atol=1e-6)
        for i, m in enumerate(norms):
            torch.testing.assert_close(grads[id(pack.gammas[i])][s], m.weight.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(grads[id(pack.betas[i])][s], m.bias.grad, rtol=1e-4, atol=1e-6)
            # the running statistics moved as nn.BatchNorm1d's did
            torch.testing.assert_close(pack.running_means[i][s], m.running_mean, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(pack.running_vars[i][s], m.running_var, rtol=1e-5, atol=1e-7)


def autograd_step(cfg: RunConfig, state: dict, x: torch.Tensor, y: torch.Tensor, masks: list):
    """The loss and gradients by autograd through cfg's own build_fcn network from `state`, with
    the dropout masks the pack drew (batch-major, as nn.Sequential lays them out)."""
    model = build_fcn(cfg).train()
    model.load_state_dict(state)
    h, layer = x, 0
    for m in model:
        if isinstance(m, nn.Dropout):
            h = h * masks[layer - 1]
        else:
            h = m(h)
            layer += isinstance(m, nn.Linear)
    loss = F.cross_entropy(h, y, label_smoothing=cfg.label_smoothing)
    loss.backward()
    return loss, model


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_dropout_drops_at_its_rate_keeps_the_mean_and_is_the_members_own(p):
    cfg = replace(CFG, hidden=(1000, 1000), batch_size=200, dropout=p)
    alone = Pack([cfg], "cpu")
    first, second = alone.dropout_masks(200)
    ones = torch.ones(1, 1000, 200)
    out = ones * first
    assert (out == 0).float().mean().item() == pytest.approx(p, abs=0.005)
    assert out.mean().item() == pytest.approx(1.0, abs=0.02)
    kept = out[out != 0]
    assert kept.min().item() == kept.max().item() == pytest.approx(1 / (1 - p), rel=1e-4)
    assert not torch.equal(second, first)  # each layer its own draws
    # The same member in a pack, beside others, at another slot: the same masks.
    pack = Pack([replace(cfg, seed=3, optimizer="sgd"), replace(cfg, seed=4, dropout=(0.0, p)), cfg], "cpu")
    masks = pack.dropout_masks(200)
    assert torch.equal(masks[0][pack.slot[2]], first[0]) and torch.equal(masks[1][pack.slot[2]], second[0])
    assert not torch.equal(masks[0][pack.slot[0]], first[0])  # another seed, other masks
    assert torch.equal(masks[0][pack.slot[1]], ones[0])  # no dropout: every unit kept, unscaled
    alone.steps.add_(1)  # the next step draws new masks
    assert not torch.equal(alone.dropout_masks(200)[0], first)
