"""The pack's hand-written layers (kernels.py) against autograd, and its dropout masks (rng.py)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_sweep import kernels, packed
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


def _norm(k: int, width: int, seed: int) -> kernels.Norm:
    """A batch-norm layer's flat tensors with values away from the defaults (so a swapped or
    missing term shows): gamma, beta, running mean and var, and the gradients' buffers."""
    g = torch.Generator().manual_seed(seed)
    n = k * width
    return kernels.Norm(1 + 0.5 * torch.randn(n, generator=g), torch.randn(n, generator=g),
                        torch.randn(n, generator=g), 0.5 + torch.rand(n, generator=g),
                        torch.empty(n), torch.empty(n))  # fmt: skip


@pytest.mark.parametrize("impl", ["reduce", "compiled"])
@pytest.mark.parametrize(("k", "width", "batch"), [(1, 8, 2), (3, 48, 32), (5, 256, 64), (2, 1024, 64)])
def test_the_reduce_and_compiled_batch_norms_are_the_native_one(k, width, batch, impl):
    """Forward output, saved statistics, running statistics, and the gradients of z, gamma and beta
    of `reduce` (and of `compiled`, Inductor's kernels of it) equal `native`'s to float rounding, in
    training and in evaluation."""
    from fcn_sweep import inductor

    bn = kernels.BN_IMPLS[impl]
    torch.manual_seed(k * width + batch)
    z = 3 + 2 * torch.randn(k, width, batch)  # a mean away from 0 and a spread away from 1
    dy = torch.randn(k, width, batch)
    native, reduce = _norm(k, width, 7), _norm(k, width, 7)
    y_n, saved_n = kernels.batch_norm(z, native, True)
    y_r, saved_r = bn.forward(z, reduce, True)
    close = lambda a, b: torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # noqa: E731
    close(y_r, y_n)
    close(saved_r[0].view(-1), saved_n[0])
    close(saved_r[1].view(-1), saved_n[1])
    close(reduce.mean, native.mean)
    close(reduce.var, native.var)
    tape = lambda saved: kernels.Tape(z, z, y_n, y_n, None, saved)  # noqa: E731
    dz_n = kernels.batch_norm_backward(dy, tape(saved_n), native)
    dz_r = bn.backward(dy, tape(saved_r), reduce)
    close(dz_r, dz_n)
    close(reduce.dgamma, native.dgamma)
    close(reduce.dbeta, native.dbeta)
    with torch.inference_mode():
        close(bn.forward(z, reduce, False)[0], kernels.batch_norm(z, native, False)[0])
    assert inductor.failed is None


@pytest.mark.usefixtures("one_thread")  # conftest.one_thread: the packed tests' own setting
@pytest.mark.parametrize(("optimizer", "impl"), [("sgd", "reduce"), ("adam", "reduce"), ("rmsprop", "reduce"),
                                                 ("adam", "compiled")])  # fmt: skip
def test_a_pack_trained_with_the_reduce_batch_norm_is_the_native_pack(fashion, tiny, optimizer, impl, monkeypatch):
    """Whole runs of three members (seed, dropout, init, schedule differ). The two implementations
    round differently at every step, as a pack's and a run's products do on CUDA, so the contract is
    tests/test_cuda.py's there: SGD to tests/test_packed.py's TIGHT unless a ReLU kink came first
    (seen here: one member of three), Adam and RMSprop, which scale batch norm's rounding noise up
    to steps of about lr, as two runs of one config (AS_RUNS)."""
    from fcn_sweep.packed import fit_packed

    from .test_cuda import AS_RUNS
    from .test_packed import LR, TIGHT, history_mismatch, variants

    cfgs = variants(replace(tiny, optimizer=optimizer, lr=LR[optimizer], batch_norm=True))
    native = fit_packed(cfgs, data=fashion)
    monkeypatch.setitem(packed.BN_DEFAULTS, fashion.device.type, impl)
    reduce = fit_packed(cfgs, data=fashion)
    noisy, kinks = optimizer != "sgd", None
    for k, (n, r) in enumerate(zip(native, reduce, strict=True)):
        assert r.status == n.status == "finished"
        mismatch = history_mismatch(n.history, r.history, AS_RUNS if noisy else TIGHT)
        assert not (mismatch and noisy), f"member {k}: {mismatch}"
        if mismatch:
            kinks = bn_kinks(cfgs, fashion) if kinks is None else kinks
            assert k in kinks, f"member {k}, no ReLU kink first: {mismatch}"
        elif not noisy:
            for key, value in n.best_state.items():
                torch.testing.assert_close(r.best_state[key], value, rtol=1e-4, atol=1e-4, msg=key)


def bn_kinks(cfgs: list[RunConfig], data) -> set[int]:
    """Members whose paths under the two batch norms, replayed step by step, first differ in the
    sign of a ReLU pre-activation while they still agree to rounding (tests/test_packed.relu_kinks)."""
    from .test_packed import ROUNDING, recording

    seen: dict[str, list[torch.Tensor]] = {"native": [], "reduce": []}
    packs = [recording(Pack(cfgs, data.device, bn=name), into) for name, into in seen.items()]
    for pack in packs:
        pack.graphs = None  # recording reads every step's values: eager steps, not a graph's replays
    for epoch in range(1, cfgs[0].epochs + 1):
        for pack in packs:
            pack.train_epoch(data.train, lambda: False)
            pack.set_epoch(epoch)
    out = set()
    for k in range(len(cfgs)):
        for a, b in zip(seen["native"], seen["reduce"], strict=True):
            a, b = a[packs[0].slot[k]], b[packs[0].slot[k]]
            if ((a > 0) != (b > 0)).any():
                if (a - b).abs().max() <= ROUNDING * max(1.0, a.abs().max().item()):
                    out.add(k)
                break
    return out


def test_a_pack_takes_a_batch_norm_by_name():
    assert Pack([CFG], "cpu", bn="reduce").bn is kernels.BN_IMPLS["reduce"]
    assert Pack([CFG], "cpu").bn is kernels.BN_IMPLS[packed.bn_name("cpu")] is kernels.BN_IMPLS["native"]
    with pytest.raises(ValueError, match="expected one of native, reduce"):
        Pack([CFG], "cpu", bn="fused")
