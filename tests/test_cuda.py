"""What only a GPU can show: torch's fused kernels with step tensors on the device, packed ≡ alone
for every optimizer, determinism, and the captured CUDA graph of the step (cuda_graph.py) computing
what the eager step computes, re-captured when members leave, the lr changes or the batch shape
does. Skipped without a device; `scripts/gpu_check.sh` runs them (`-m cuda`).
FCN_SWEEP_TEST_DEVICE=cpu runs the same tests on the CPU (the graph tests then skip), to try them
anywhere."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from fcn_sweep import data as data_mod
from fcn_sweep import optim
from fcn_sweep.config import OPTIMIZERS, RunConfig
from fcn_sweep.packed import EAGER_ENV, Pack, fit_packed
from fcn_sweep.train import fit

from .conftest import TINY, real_data_available
from .test_optim import TORCH, train_both
from .test_packed import LR, history_mismatch, relu_kinks, tolerance, variants

DEVICE = torch.device(os.environ.get("FCN_SWEEP_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.usefixtures("one_thread"),  # on the CPU (FCN_SWEEP_TEST_DEVICE=cpu): conftest.one_thread
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


# With batch norm, a first-layer weight whose pixel is constant over a batch gets a gradient of pure
# rounding noise (the norm removes the batch mean), which Adam and RMSprop scale up to steps of
# about lr. cuBLAS runs other kernels for a batch of K=1 and of K=3 products (another summation
# order), so that noise differs and a member and its run alone take two equally valid paths (seen
# on an H200: val acc 0.6449 alone, 0.6468 packed after one epoch). They agree as runs do, not to
# rounding; SGD, which does not scale the noise up, and every optimizer without batch norm do.
AS_RUNS = {"loss": 2e-2, "acc": 1e-2}


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_packed_member_is_its_run_alone_on_the_device(device_data, optimizer, batch_norm):
    cfgs = variants(replace(TINY, optimizer=optimizer, lr=LR[optimizer], batch_norm=batch_norm))
    alone = [fit(c, data=device_data, device=DEVICE) for c in cfgs]
    together = fit_packed(cfgs, data=device_data, device=DEVICE)
    noisy = batch_norm and optimizer != "sgd" and DEVICE.type == "cuda"
    kinks = None
    for k, (a, p) in enumerate(zip(alone, together, strict=True)):
        assert p.status == a.status == "finished"
        mismatch = history_mismatch(a.history, p.history, AS_RUNS if noisy else tolerance(a.cfg))
        if mismatch and not noisy:  # the contract of tests/test_packed.py: only a ReLU kink may come first
            kinks = relu_kinks(cfgs, device_data) if kinks is None else kinks
            assert k in kinks, f"member {k} of {optimizer} on {DEVICE}, no ReLU kink first: {mismatch}"
        assert not (mismatch and noisy), f"member {k} of {optimizer} on {DEVICE}: {mismatch}"


def test_runs_and_packs_repeat_bit_for_bit_on_the_device(device_data):
    cfg = replace(TINY, optimizer="adam", lr=1e-3, batch_norm=True, dropout=0.3)
    first, again = fit(cfg, data=device_data, device=DEVICE), fit(cfg, data=device_data, device=DEVICE)
    assert without_times(first.history) == without_times(again.history)
    cfgs = variants(cfg)
    packs = [fit_packed(cfgs, data=device_data, device=DEVICE) for _ in range(2)]
    for a, b in zip(*packs, strict=True):
        assert without_times(a.history) == without_times(b.history)


needs_graphs = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs need a CUDA device")


@pytest.fixture(scope="module")
def ragged_data() -> data_mod.FashionMNIST:
    """An epoch whose last batch is partial (1000 = 15 * 64 + 40): its own shape, run eagerly."""
    if not real_data_available():
        pytest.skip("FashionMNIST files not on this machine")
    return data_mod.load(DEVICE, subset=1000)


@needs_graphs
def test_the_captured_step_computes_what_the_eager_step_does(ragged_data, monkeypatch):
    """Every optimizer, a cosine schedule (the lr changes at each epoch's end: re-capture), a member
    that diverges and leaves (re-capture at a new K), and a partial last batch."""
    base = replace(TINY, subset=1000, epochs=3, batch_norm=True)
    cfgs = [replace(base, optimizer=o, lr=LR[o], seed=i, schedule="cosine" if i % 2 else "constant", dropout=0.2)
            for i, o in enumerate(OPTIMIZERS)]  # fmt: skip
    cfgs.append(replace(base, optimizer="sgd", seed=9, lr=1.0e4, momentum=0.99, init="normal", init_std=10.0))
    graphed = fit_packed(cfgs, data=ragged_data, device=DEVICE)
    monkeypatch.setenv(EAGER_ENV, "1")
    eager = fit_packed(cfgs, data=ragged_data, device=DEVICE)
    assert graphed[-1].status == eager[-1].status == "diverged"
    for g, e in zip(graphed, eager, strict=True):
        assert g.status == e.status and len(g.history) == len(e.history)
        assert history_mismatch(e.history, g.history, tolerance(e.cfg)) == [], e.cfg.optimizer


@needs_graphs
def test_the_step_is_captured_and_eager_mode_turns_capture_off(device_data, monkeypatch):
    cfgs = variants(replace(TINY, epochs=1))
    pack = Pack(cfgs, DEVICE)
    pack.train_epoch(device_data.train, lambda: False)
    assert pack.graphs is not None and pack.graphs.graph is not None
    monkeypatch.setenv(EAGER_ENV, "1")
    assert Pack(cfgs, DEVICE).graphs is None


def test_a_run_repeats_bit_for_bit_with_graphs(device_data):
    cfg = replace(TINY, optimizer="adamw", lr=1e-3, batch_norm=True, dropout=0.3, schedule="cosine")
    runs = [fit_packed(variants(cfg), data=device_data, device=DEVICE) for _ in range(2)]
    for a, b in zip(*runs, strict=True):
        assert without_times(a.history) == without_times(b.history)


@needs_graphs
def test_a_capture_that_raises_on_the_device_leaves_the_pack_eager_to_the_same_results(device_data, monkeypatch):
    from fcn_sweep.cuda_graph import CapturedSteps

    cfgs = variants(replace(TINY, optimizer="adam", lr=1e-3, batch_norm=True, dropout=0.2))
    monkeypatch.setenv(EAGER_ENV, "1")
    eager = fit_packed(cfgs, data=device_data, device=DEVICE)
    monkeypatch.delenv(EAGER_ENV)

    def refuse(self, step):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(CapturedSteps, "_capture", refuse)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        fell_back = fit_packed(cfgs, data=device_data, device=DEVICE)
    for f, e in zip(fell_back, eager, strict=True):
        assert without_times(f.history) == without_times(e.history)
    assert torch.cuda.current_stream(DEVICE) == torch.cuda.default_stream(DEVICE)


@needs_graphs
def test_a_schedule_keeps_the_captured_graph_on_the_device(device_data, monkeypatch):
    """The stacked update reads its lrs from tensors: a cosine schedule over three epochs captures once."""
    from fcn_sweep.cuda_graph import CapturedSteps

    captures = []
    capture = CapturedSteps._capture
    monkeypatch.setattr(CapturedSteps, "_capture", lambda self, step: captures.append(1) or capture(self, step))
    cfgs = [replace(TINY, epochs=3, schedule="cosine", seed=s, lr=1e-3 * (1 + s / 4)) for s in range(4)]
    graphed = fit_packed(cfgs, data=device_data, device=DEVICE)
    monkeypatch.setenv(EAGER_ENV, "1")
    eager = fit_packed(cfgs, data=device_data, device=DEVICE)
    assert len(captures) == 1
    for g, e in zip(graphed, eager, strict=True):
        assert history_mismatch(e.history, g.history, tolerance(e.cfg)) == []


@pytest.mark.parametrize(("optimizer", "impl"), [("sgd", "reduce"), ("adam", "reduce"), ("adam", "compiled")])
def test_the_reduce_batch_norm_is_captured_and_trains_as_the_native_one_on_the_device(device_data, optimizer, impl,
                                                                                       monkeypatch):  # fmt: skip
    """kernels.batch_norm_reduce on the device, and its compiled kernels (`compiled`, Triton on CUDA):
    a pack's step with it is captured (no host sync in it), the captured step computes what the
    eager one does, and the runs agree with native batch norm's
    as tests/test_kernels.py holds them on the CPU (rounding differs at every step: AS_RUNS for Adam,
    TIGHT for SGD unless a ReLU kink came first)."""
    from fcn_sweep import inductor, packed

    from .test_kernels import bn_kinks

    cfgs = variants(replace(TINY, optimizer=optimizer, lr=LR[optimizer], batch_norm=True, dropout=0.2))
    native = fit_packed(cfgs, data=device_data, device=DEVICE)
    monkeypatch.setitem(packed.BN_DEFAULTS, DEVICE.type, impl)
    if DEVICE.type == "cuda":
        pack = Pack(cfgs, DEVICE)
        pack.train_epoch(device_data.train, lambda: False)
        assert pack.graphs.failed is None and pack.graphs.graph is not None
    reduce = fit_packed(cfgs, data=device_data, device=DEVICE)
    assert inductor.failed is None, inductor.failed
    monkeypatch.setenv(EAGER_ENV, "1")
    eager = fit_packed(cfgs, data=device_data, device=DEVICE)
    kinks = None
    for k, (n, r, e) in enumerate(zip(native, reduce, eager, strict=True)):
        assert history_mismatch(e.history, r.history, tolerance(e.cfg)) == []
        mismatch = history_mismatch(n.history, r.history, AS_RUNS if optimizer != "sgd" else tolerance(n.cfg))
        if mismatch and optimizer == "sgd":
            kinks = bn_kinks(cfgs, device_data) if kinks is None else kinks
            assert k in kinks, f"member {k} on {DEVICE}, no ReLU kink first: {mismatch}"
        else:
            assert mismatch == [], f"member {k} on {DEVICE}: {mismatch}"


def test_the_compiled_update_is_captured_and_trains_as_the_stacked_one_on_the_device(device_data, monkeypatch):
    """compiled.CompiledUpdate on the device (Triton on CUDA): it compiles (no fallback), a pack's
    step with it is captured, the captured step computes what the eager one does, and the runs of
    every optimizer agree with the stacked update's as runs whose rounding differs at every step."""
    from fcn_sweep import packed
    from fcn_sweep.compiled import CompiledUpdate

    cfgs = [
        replace(TINY, optimizer=o, lr=LR[o] * (1 + 0.5 * s), seed=s, batch_norm=True, dropout=0.2 * s,
                weight_decay=1e-3 * s, schedule=("constant", "cosine")[s])
        for o in OPTIMIZERS for s in range(2)
    ]  # fmt: skip
    with packed.defaults(DEVICE.type, update="stacked"):
        stacked = fit_packed(cfgs, data=device_data, device=DEVICE)
    with packed.defaults(DEVICE.type, update="compiled"):
        pack = Pack(cfgs, DEVICE)
        pack.train_epoch(device_data.train, lambda: False)
        assert isinstance(pack.update, CompiledUpdate) and pack.update.failed is None, pack.update.failed
        if DEVICE.type == "cuda":
            assert pack.graphs.failed is None and pack.graphs.graph is not None
        mine = fit_packed(cfgs, data=device_data, device=DEVICE)
        monkeypatch.setenv(EAGER_ENV, "1")
        eager = fit_packed(cfgs, data=device_data, device=DEVICE)
    for s, m, e in zip(stacked, mine, eager, strict=True):
        assert m.status == s.status == "finished"
        assert history_mismatch(e.history, m.history, tolerance(e.cfg)) == []
        assert history_mismatch(s.history, m.history, AS_RUNS) == [], m.cfg
