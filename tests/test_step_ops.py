"""The operations a training step dispatches do not grow with the pack's size (torch.profiler's
count of dispatched ops, not time): stacked tensors, per-member constants as tensors, counter-based
dropout masks and one optimizer call per group of members sharing hyperparameters."""

from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from fcn_sweep.config import RunConfig
from fcn_sweep.packed import Pack

BASE = RunConfig(hidden=(32, 16), batch_norm=True, batch_size=16, label_smoothing=0.1)
GROUPS = [("sgd", 0.05), ("adam", 1e-3), ("adamw", 2e-3), ("rmsprop", 5e-4)]  # every optimizer, several lrs


def pack_of(k: int) -> Pack:
    """k members cycling through GROUPS, each with its own seed, dropout rate, init and smoothing."""
    inits = ("default", "xavier_uniform", "kaiming_normal")
    cfgs = [
        replace(BASE, optimizer=GROUPS[i % 4][0], lr=GROUPS[i % 4][1], seed=i, dropout=(0.1 * (i % 5), 0.3),
                init=inits[i % 3], label_smoothing=0.05 * (i % 3))
        for i in range(k)
    ]  # fmt: skip
    return Pack(cfgs, "cpu")


def ops_per_step(pack: Pack) -> int:
    k = len(pack.cfgs)
    x, y = torch.randn(k, BASE.batch_size, 784), torch.randint(0, 10, (k, BASE.batch_size))
    sums = torch.zeros(k), torch.zeros(k, dtype=torch.long)
    for _ in range(2):  # past the optimizers' first step, which tries their kernels
        pack.train_step(x, y, *sums)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        pack.train_step(x, y, *sums)
    return len(prof.events())


def test_a_pack_of_64_dispatches_what_a_pack_of_4_does():
    four, sixty_four = ops_per_step(pack_of(4)), ops_per_step(pack_of(64))
    assert abs(sixty_four - four) <= 0.1 * four, f"ops per step: pack of 4 {four}, pack of 64 {sixty_four}"
