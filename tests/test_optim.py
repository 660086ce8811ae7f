"""`optim.Update` calls torch's optimizer kernels directly: it must be torch's `step()`, bit for bit."""

import pytest
import torch

from fcn_sweep.config import OPTIMIZERS, RunConfig
from fcn_sweep.model import build_fcn
from fcn_sweep.optim import Update, build_optimizer, build_schedule


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_update_is_torchs_step_bit_for_bit(optimizer, momentum, weight_decay):
    cfg = RunConfig(hidden=(32,), batch_norm=True, optimizer=optimizer, lr=1e-2, momentum=momentum,
                    weight_decay=weight_decay, schedule="cosine", epochs=3)  # fmt: skip
    torch.manual_seed(0)
    theirs, ours = build_fcn(cfg), build_fcn(cfg)
    ours.load_state_dict(theirs.state_dict())
    opt = build_optimizer(theirs.parameters(), cfg)
    our_opt = build_optimizer(ours.parameters(), cfg)
    schedules = [build_schedule(opt, cfg), build_schedule(our_opt, cfg)]
    update = Update(our_opt, cfg)
    for step in range(6):
        x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
        for model, zero_grad in ((theirs, opt.zero_grad), (ours, update.zero_grad)):
            zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        update.step()
        if step % 2:  # the schedule moves the lr both read
            for s in schedules:
                s.step()
    for (name, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
