"""The update a pack uses on CUDA (stacked.StackedUpdate), run on the CPU: each member's step is
its optimizer's, a step dispatches the same operations whatever K is and however the lrs differ,
and a new epoch's lrs reach a captured step without capturing it again. Also the capture's
fallback: a capture or replay that raises leaves the pack training eagerly, to the same results.
The CUDA calls of cuda_graph.CapturedSteps are replaced by CPU stand-ins (`CpuGraphs`): "capture"
keeps the step, "replay" runs it."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from fcn_sweep import packed
from fcn_sweep.compiled import CompiledUpdate
from fcn_sweep.config import OPTIMIZERS, RunConfig
from fcn_sweep.cuda_graph import CapturedSteps
from fcn_sweep.lifecycle import lifecycle
from fcn_sweep.optim import PackUpdate, group_key, zero_moments
from fcn_sweep.packed import Pack
from fcn_sweep.stacked import StackedUpdate

from .test_packed import LR, history_mismatch, relu_kinks, tolerance, variants
from .test_step_ops import BASE, ops_per_step

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread says why


def mixed_members(k: int) -> list[RunConfig]:
    """k members over every optimizer, each with its own lr, momentum, weight decay and schedule."""
    cfgs = [
        replace(BASE, optimizer=OPTIMIZERS[i % 4], lr=LR[OPTIMIZERS[i % 4]] * (1 + 0.1 * i), seed=i,
                momentum=(0.0, 0.5, 0.9, 0.99)[i % 4 if i % 4 != 1 else (i // 4) % 4],
                weight_decay=(0.0, 1e-2)[i % 2], schedule=("constant", "cosine")[(i // 2) % 2], epochs=4)
        for i in range(k)
    ]  # fmt: skip
    return sorted(cfgs, key=group_key)


def test_each_members_step_is_its_optimizers_step():
    """Ten steps over four epochs' lrs, from the same parameters and gradients: the stacked update
    and the grouped fused kernels (torch's arithmetic) agree to float rounding, member by member."""
    cfgs = mixed_members(12)
    torch.manual_seed(0)
    shapes = [(12, 6, 5), (12, 6, 1), (12, 6)]  # a weight, a bias, a batch-norm gamma
    start = [torch.randn(s) for s in shapes]
    grads = [torch.empty(s) for s in shapes]
    params = {kind: [t.clone() for t in start] for kind in (PackUpdate, StackedUpdate)}
    updates = {kind: kind(ps, grads, cfgs, zero_moments(ps)) for kind, ps in params.items()}
    for step in range(10):
        for g in grads:
            g.copy_(torch.randn(g.shape))
        for u in updates.values():
            u.set_epoch(step // 3)
            u.step()
        assert updates[PackUpdate].lrs() == updates[StackedUpdate].lrs()
    for fused, stacked in zip(params[PackUpdate], params[StackedUpdate], strict=True):
        torch.testing.assert_close(stacked, fused, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(start, params[StackedUpdate], strict=True))


def test_a_members_step_in_a_pack_is_its_step_alone_bit_for_bit():
    """Given the same gradients, a member's update does not depend on the members beside it."""
    cfgs = mixed_members(8)
    torch.manual_seed(1)
    shapes = [(8, 6, 5), (8, 6, 1), (8, 6)]
    pack_params, grads = [torch.randn(s) for s in shapes], [torch.empty(s) for s in shapes]
    alone = [[p[k].clone().unsqueeze(0) for p in pack_params] for k in range(8)]
    alone_grads = [[torch.empty_like(p) for p in ps] for ps in alone]
    updates = [StackedUpdate(alone[k], alone_grads[k], [cfgs[k]]) for k in range(8)]
    pack = StackedUpdate(pack_params, grads, cfgs)
    for step in range(6):
        for k in range(8):
            for g, mine in zip(grads, alone_grads[k], strict=True):
                mine.copy_(g[k : k + 1].copy_(torch.randn(mine.shape)))
            updates[k].set_epoch(step // 2)
            updates[k].step()
        pack.set_epoch(step // 2)
        pack.step()
    for k in range(8):
        for p, mine in zip(pack_params, alone[k], strict=True):
            assert torch.equal(p[k : k + 1], mine), cfgs[k]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_with_the_stacked_update_each_member_matches_its_run_alone(fashion, tiny, optimizer, monkeypatch):
    """The pack contract of tests/test_packed.py, on the update CUDA uses."""
    monkeypatch.setitem(packed.UPDATES, "cpu", StackedUpdate)
    cfgs = variants(replace(tiny, optimizer=optimizer, lr=LR[optimizer], batch_norm=True))
    together = packed.fit_packed(cfgs, data=fashion)
    kinks = None
    for k, cfg in enumerate(cfgs):
        alone = packed.fit_packed([cfg], data=fashion)[0]
        mismatch = history_mismatch(alone.history, together[k].history, tolerance(cfg))
        if mismatch:
            kinks = relu_kinks(cfgs, fashion) if kinks is None else kinks
            assert k in kinks, f"member {k} of {optimizer}, no ReLU kink first: {mismatch}"


def test_a_pack_of_64_different_lrs_dispatches_what_a_pack_of_4_does():
    """Every member its own lr (a bayes sweep's continuous lr): the grouped update makes one call
    per member, the stacked one a fixed handful per optimizer."""

    def pack(k: int) -> Pack:
        cfgs = [replace(BASE, optimizer=OPTIMIZERS[i % 4], lr=1e-3 * (1 + i / k), seed=i) for i in range(k)]
        return Pack(cfgs, "cpu", update=StackedUpdate)

    four, sixty_four = ops_per_step(pack(4)), ops_per_step(pack(64))
    assert abs(sixty_four - four) <= 0.1 * four, f"ops per step: pack of 4 {four}, pack of 64 {sixty_four}"


class CpuGraphs(CapturedSteps):
    """CapturedSteps with its CUDA calls replaced: capture keeps the step, replay runs it."""

    def __init__(self, step, fail: str | None = None):
        super().__init__(step)
        self.fail, self.captures, self.replays = fail, 0, 0

    def _warm_up(self, step):
        step()

    def _capture(self, step):
        if self.fail == "capture":
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        return step

    def _replay(self):
        if self.fail == "replay":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        self.replays += 1
        self.graph()


def train(cfgs, data, update, fail=None):
    pack = Pack(cfgs, "cpu", update=update)
    pack.graphs = CpuGraphs(pack.step_on, fail) if fail != "eager" else None
    return lifecycle(pack, cfgs, [None] * len(cfgs), data, lambda: False), pack.graphs


@pytest.mark.parametrize(("update", "captures"), [(StackedUpdate, 1), (CompiledUpdate, 1), (PackUpdate, 3)])
def test_a_new_epochs_lrs_keep_the_captured_step_with_the_stacked_update(fashion, tiny, update, captures):
    cfgs = [replace(tiny, epochs=3, schedule="cosine", seed=s, lr=1e-3 * (s + 1)) for s in range(2)]
    results, graphs = train(cfgs, fashion, update)
    eager, _ = train(cfgs, fashion, update, fail="eager")
    assert graphs.captures == captures and graphs.replays > 0
    assert [r.history[-1]["lr"] for r in results] == [r.history[-1]["lr"] for r in eager]
    for g, e in zip(results, eager, strict=True):
        assert history_mismatch(e.history, g.history, tolerance(e.cfg)) == []


@pytest.mark.parametrize("fail", ["capture", "replay"])
def test_a_failing_capture_or_replay_leaves_the_pack_training_eagerly(fashion, tiny, fail):
    cfgs = variants(replace(tiny, optimizer="adam", lr=1e-3, dropout=0.2))
    eager, _ = train(cfgs, fashion, StackedUpdate, fail="eager")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results, graphs = train(cfgs, fashion, StackedUpdate, fail=fail)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1 and f"CUDA graph {fail} failed (RuntimeError" in said[0], said
    assert graphs.failed and graphs.graph is None
    for r, e in zip(results, eager, strict=True):
        assert r.status == e.status == "finished"
        assert history_mismatch(e.history, r.history, tolerance(e.cfg)) == []
