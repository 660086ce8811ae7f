"""What only a GPU can show: torch's fused kernels with step tensors on the device, packed ≡ solo for
every optimizer, and determinism, all on CUDA. Skipped without a device; `scripts/gpu_check.sh` runs
them (`-m cuda`). FCN_SWEEP_TEST_DEVICE=cpu runs the same tests on the CPU, to try them anywhere."""

from __future__ import annotations

import os
import warnings
from dataclasses import replace

import pytest
import torch

from fcn_sweep import data as data_mod
from fcn_sweep import optim
from fcn_sweep.config import OPTIMIZERS, RunConfig
from fcn_sweep.packed import fit_packed
from fcn_sweep.train import fit

from .conftest import TINY, real_data_available
from .test_optim import TORCH, train_both
from .test_packed import LR, history_mismatch, relu_kinks, tolerance, variants

DEVICE = torch.device(os.environ.get("FCN_SWEEP_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def device_data() -> data_mod.FashionMNIST:
    if not real_data_available():
        pytest.skip("FashionMNIST files not on this machine")
    return data_mod.load(DEVICE, subset=TINY.subset)


def without_times(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if not k.startswith("time/")} for m in history]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_the_kernels_run_on_the_device_and_are_torchs_step_bit_for_bit(optimizer, monkeypatch):
    monkeypatch.setattr(optim, "FALLBACKS", {})
    cfg = RunConfig(hidden=(64,), batch_norm=True, optimizer=optimizer, lr=1e-2, momentum=0.9,
                    weight_decay=1e-2, schedule="cosine", epochs=3)  # fmt: skip
    theirs, ours = train_both(cfg, TORCH[optimizer], device=DEVICE)
    assert optim.FALLBACKS == {}, "the private kernel failed on this device; the public fallback ran"
    for (name, a), b in zip(theirs.state_dict().items(), ours.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_packed_member_is_its_run_alone_on_the_device(device_data, optimizer):
    cfgs = variants(replace(TINY, optimizer=optimizer, lr=LR[optimizer], batch_norm=True))
    alone = [fit(c, data=device_data, device=DEVICE) for c in cfgs]
    together = fit_packed(cfgs, data=device_data, device=DEVICE)
    kinks = None
    for k, (a, p) in enumerate(zip(alone, together, strict=True)):
        assert p.status == a.status == "finished"
        mismatch = history_mismatch(a.history, p.history, tolerance(a.cfg))
        if mismatch:  # the contract of tests/test_packed.py: only a ReLU kink may come first
            kinks = relu_kinks(cfgs, device_data) if kinks is None else kinks
            assert k in kinks, mismatch
            warnings.warn(f"member {k} of {optimizer} on {DEVICE}: off tolerance after {kinks[k]}", stacklevel=1)


def test_runs_and_packs_repeat_bit_for_bit_on_the_device(device_data):
    cfg = replace(TINY, optimizer="adam", lr=1e-3, batch_norm=True, dropout=0.3)
    first, again = fit(cfg, data=device_data, device=DEVICE), fit(cfg, data=device_data, device=DEVICE)
    assert without_times(first.history) == without_times(again.history)
    cfgs = variants(cfg)
    packs = [fit_packed(cfgs, data=device_data, device=DEVICE) for _ in range(2)]
    for a, b in zip(*packs, strict=True):
        assert without_times(a.history) == without_times(b.history)
