"""`optim.Optimizer` calls torch's optimizer kernels directly: it must be torch's optimizer, bit for bit."""

import math
from dataclasses import replace

import pytest
import torch

from fcn_sweep import optim as optim_mod
from fcn_sweep import packed, train
from fcn_sweep.config import OPTIMIZERS, RunConfig
from fcn_sweep.model import build_fcn
from fcn_sweep.optim import Optimizer

from .conftest import TINY
from .test_packed import history_mismatch, tolerance

# How a user of torch would build each optimizer; its multi-tensor path, as Optimizer's kernels are.
TORCH = {
    "sgd": lambda params, group: torch.optim.SGD(params, **group, fused=True),
    "adam": lambda params, group: torch.optim.Adam(params, **group, fused=True),
    "adamw": lambda params, group: torch.optim.AdamW(params, **group, fused=True),
    "rmsprop": lambda params, group: torch.optim.RMSprop(params, **group, foreach=True),
}


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_update_is_torchs_step_bit_for_bit(optimizer, momentum, weight_decay):
    cfg = RunConfig(hidden=(32,), batch_norm=True, optimizer=optimizer, lr=1e-2, momentum=momentum,
                    weight_decay=weight_decay, schedule="cosine", epochs=3)  # fmt: skip
    theirs, ours = train_both(cfg, TORCH[optimizer])
    for (name, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("sgd", lambda g: g["momentum"]),
        ("adam", lambda g: g["betas"][0]),
        ("adamw", lambda g: g["betas"][0]),
        ("rmsprop", lambda g: g["momentum"]),
    ],
)
def test_momentum_goes_where_each_optimizer_keeps_it_and_torch_accepts_the_group(name, read):
    cfg = RunConfig(optimizer=name, lr=0.05, momentum=0.95, weight_decay=1e-4)
    group = Optimizer(build_fcn(cfg).parameters(), cfg).group
    assert (group["lr"], read(group), group["weight_decay"]) == (0.05, 0.95, 1e-4)
    torch_group = TORCH[name](build_fcn(cfg).parameters(), group).param_groups[0]
    assert {k: torch_group[k] for k in group} == group


def test_cosine_schedule_is_torchs_cosine_annealing_once_per_epoch():
    cfg = RunConfig(hidden=(8,), lr=0.1, schedule="cosine", epochs=5)
    update = Optimizer(build_fcn(cfg).parameters(), cfg)
    opt = torch.optim.SGD(build_fcn(cfg).parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    lrs, theirs = [], []
    for epoch in range(1, cfg.epochs + 1):
        lrs.append(update.lr)
        theirs.append(opt.param_groups[0]["lr"])
        update.set_epoch(epoch)
        opt.step()
        schedule.step()
    assert lrs == pytest.approx(theirs, rel=1e-12)
    assert lrs[0] == 0.1 and math.isclose(lrs[-1], 0.1 * 0.0955, rel_tol=1e-2)


# name -> what a torch without our private kernel would lack, and torch.optim's public single-tensor path.
MISSING = {"sgd": "_fused_sgd_", "adam": "_fused_adam_", "adamw": "_fused_adamw_", "rmsprop": "_foreach_sqrt"}
PUBLIC = {
    "sgd": lambda params, group: torch.optim.SGD(params, **group, foreach=False),
    "adam": lambda params, group: torch.optim.Adam(params, **group, foreach=False),
    "adamw": lambda params, group: torch.optim.AdamW(params, **group, foreach=False),
    "rmsprop": lambda params, group: torch.optim.RMSprop(params, **group, foreach=False),
}


def train_both(cfg, make_theirs, steps=6, device="cpu"):
    """The same net trained side by side by `make_theirs` (a torch.optim class) and by `Optimizer`,
    on the same random batches; returns (theirs, ours)."""
    torch.manual_seed(0)
    theirs, ours = build_fcn(cfg).to(device), build_fcn(cfg).to(device)
    ours.load_state_dict(theirs.state_dict())
    update = Optimizer(ours.parameters(), cfg)
    opt = make_theirs(theirs.parameters(), dict(update.group))
    for step in range(steps):
        x, y = torch.randn(16, 784).to(device), torch.randint(0, 10, (16,)).to(device)
        for model, zero_grad in ((theirs, opt.zero_grad), (ours, update.zero_grad)):
            zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        update.step()
        if step % 2:  # an epoch ends: the schedule moves the lr, and torch's optimizer follows it
            update.set_epoch(step // 2 + 1)
            opt.param_groups[0]["lr"] = update.lr
    return theirs, ours


@pytest.fixture
def fresh_fallbacks(monkeypatch):
    monkeypatch.setattr(optim_mod, "FALLBACKS", {})


def _fails(*args, **kwargs):
    raise RuntimeError("no kernel for this device")


@pytest.mark.parametrize("how", ["missing", "fails"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_without_the_private_kernel_it_is_torch_optims_public_step_bit_for_bit(
    optimizer, momentum, how, monkeypatch, fresh_fallbacks
):
    if how == "missing":
        monkeypatch.delattr(torch, MISSING[optimizer])
    else:  # RMSprop's sequence fails part-way, after it has already changed the moments: they must be put back
        monkeypatch.setattr(torch, MISSING[optimizer], _fails)
    cfg = RunConfig(hidden=(32,), batch_norm=True, optimizer=optimizer, lr=1e-2, momentum=momentum,
                    weight_decay=1e-2, schedule="cosine", epochs=3)  # fmt: skip
    with pytest.warns(RuntimeWarning, match=f"torch.optim.{optim_mod.PUBLIC[optimizer][0]}") as record:
        theirs, ours = train_both(cfg, PUBLIC[optimizer])
        train_both(cfg, PUBLIC[optimizer])  # a second run in the same process: no second warning
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    for (name, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_packed_member_without_the_kernel_trains_as_it_would_alone(monkeypatch, fresh_fallbacks, fashion):
    """Members step over views of the pack's tensors, which move when a member leaves."""
    monkeypatch.delattr(torch, "_fused_adam_")
    cfgs = [replace(TINY, epochs=1, optimizer="adam", lr=1e-3, seed=seed) for seed in (0, 1)]
    with pytest.warns(RuntimeWarning, match="torch.optim.Adam"):
        alone = [train.fit(cfg, data=fashion) for cfg in cfgs]
        together = packed.fit_packed(cfgs, data=fashion)
    for a, p in zip(alone, together, strict=True):
        assert not history_mismatch(a.history, p.history, tolerance(a.cfg))
