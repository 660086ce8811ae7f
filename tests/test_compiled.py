"""The compiled update (compiled.CompiledUpdate), compiled by Inductor's C++ backend on the CPU: each
member steps as its optimizer does, a pack trains as with the foreach update, a step's operations do
not grow with K, and a compile that fails leaves the pack stepping with the foreach update."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest
import torch

from fcn_sweep import compiled, inductor, packed
from fcn_sweep.compiled import CompiledUpdate
from fcn_sweep.config import OPTIMIZERS
from fcn_sweep.inductor import Compiled
from fcn_sweep.optim import PackUpdate, zero_moments
from fcn_sweep.packed import Pack
from fcn_sweep.stacked import StackedUpdate

from .test_packed import LR, TIGHT, history_mismatch, variants
from .test_stacked import mixed_members
from .test_step_ops import BASE, ops_per_step

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread says why
AS_RUNS = {"loss": 2e-2, "acc": 1e-2}  # test_cuda's: rounding that differs at every step, then Adam


def stepped(kinds, cfgs, shapes, steps=10):
    """Each update kind's parameters after `steps` steps from the same start and the same gradients,
    with a schedule changing the lrs every third step."""
    torch.manual_seed(0)
    start = [torch.randn(s) for s in shapes]
    grads = [torch.empty(s) for s in shapes]
    params = {kind: [t.clone() for t in start] for kind in kinds}
    updates = {kind: kind(ps, grads, cfgs, zero_moments(ps)) for kind, ps in params.items()}
    for step in range(steps):
        for g in grads:
            g.copy_(torch.randn(g.shape))
        for u in updates.values():
            u.set_epoch(step // 3)
            u.step()
    return start, params, updates


def test_each_members_compiled_step_is_its_optimizers_step():
    """Every optimizer, each member its own lr, momentum, weight decay and schedule: the compiled
    update agrees with torch's fused kernels and with the foreach update to float rounding."""
    cfgs = mixed_members(12)
    kinds = (PackUpdate, StackedUpdate, CompiledUpdate)
    start, params, updates = stepped(kinds, cfgs, [(12, 6, 5), (12, 6, 1), (12, 6)])
    assert updates[CompiledUpdate].failed is None
    for fused, stacked, mine in zip(*params.values(), strict=True):
        torch.testing.assert_close(mine, fused, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mine, stacked, rtol=1e-5, atol=1e-6)
    assert all(not torch.equal(a, b) for a, b in zip(start, params[CompiledUpdate], strict=True))


def test_a_pack_trains_with_the_compiled_update_as_with_the_foreach_one(fashion, tiny, monkeypatch):
    """Whole runs, every optimizer in one pack with batch norm: the histories agree as runs do whose
    rounding differs at every step (the foreach update's members equal their runs alone:
    tests/test_stacked.py)."""
    cfgs = [
        replace(tiny, optimizer=o, lr=LR[o] * (1 + 0.5 * s), seed=s, batch_norm=True, dropout=0.2 * s,
                weight_decay=1e-3 * s, schedule=("constant", "cosine")[s])
        for o in OPTIMIZERS for s in range(2)
    ]  # fmt: skip
    runs = {}
    for kind in (StackedUpdate, CompiledUpdate):
        monkeypatch.setitem(packed.UPDATES, "cpu", kind)
        runs[kind] = packed.fit_packed(cfgs, data=fashion)
    for foreach, mine in zip(runs[StackedUpdate], runs[CompiledUpdate], strict=True):
        assert mine.status == foreach.status == "finished"
        assert history_mismatch(foreach.history, mine.history, AS_RUNS) == [], mine.cfg


def test_a_pack_of_64_different_lrs_dispatches_what_a_pack_of_4_does_compiled():
    def pack(k: int) -> Pack:
        cfgs = [replace(BASE, optimizer=OPTIMIZERS[i % 4], lr=1e-3 * (1 + i / k), seed=i) for i in range(k)]
        return Pack(cfgs, "cpu", update=CompiledUpdate)

    four, sixty_four = ops_per_step(pack(4)), ops_per_step(pack(64))
    foreach = ops_per_step(Pack(pack(4).cfgs, "cpu", update=StackedUpdate))
    assert abs(sixty_four - four) <= 0.1 * four, f"ops per step: pack of 4 {four}, pack of 64 {sixty_four}"
    assert four < foreach, f"ops per step: compiled {four}, foreach {foreach}"


def no_backend(gm, example_inputs):
    raise RuntimeError("Compiler: cc is not found")


def unsupported_python(fn):
    raise RuntimeError("torch.compile is not supported on Python 3.99+")


FAILURES = {  # how compiling fails -> the reason the warning gives
    "no compiler": (
        lambda fn: torch.compile(fn, fullgraph=True, backend=no_backend),
        "(BackendCompilerFailed: RuntimeError: Compiler: cc is not found)",
    ),
    "unsupported python": (unsupported_python, "(RuntimeError: torch.compile is not supported on Python 3.99+)"),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_compile_that_fails_leaves_the_pack_stepping_with_the_foreach_update(monkeypatch, failure):
    compile_fn, reason = FAILURES[failure]
    monkeypatch.setattr(inductor, "failed", None)
    monkeypatch.setattr(compiled, "_COMPILED", {n: Compiled(fn) for n, fn in compiled.FORMULAS.items()})
    monkeypatch.setattr(inductor, "compile_fn", compile_fn)
    cfgs = mixed_members(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, params, updates = stepped((StackedUpdate, CompiledUpdate), cfgs, [(8, 6, 5), (8, 6)], steps=4)
    said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(said) == 1, said
    assert said[0].startswith(f"compiling compiled._adam failed {reason}"), said
    assert inductor.failed and updates[CompiledUpdate].failed == inductor.failed
    for stacked, mine in zip(params[StackedUpdate], params[CompiledUpdate], strict=True):
        assert torch.equal(mine, stacked)


def test_a_member_leaving_a_compiled_pack_leaves_the_others_as_they_were(fashion, tiny, monkeypatch):
    """A member that diverges leaves after its epoch: the pack's tensors shrink to K=3 and the update
    recompiles for them (dynamic shapes); the others train as they do in a pack without it."""
    monkeypatch.setitem(packed.UPDATES, "cpu", CompiledUpdate)
    healthy = [replace(c, epochs=3) for c in variants(replace(tiny, optimizer="sgd", lr=0.05))]
    wild = replace(healthy[0], seed=9, lr=1.0e4, momentum=0.99, init="normal", init_std=10.0, dropout=0.0)
    results = packed.fit_packed([healthy[0], wild, healthy[1], healthy[2]], data=fashion)
    assert results[1].status == "diverged" and len(results[1].history) < 3
    without = packed.fit_packed(healthy, data=fashion)
    assert inductor.failed is None
    for a, b in zip([results[0], *results[2:]], without, strict=True):
        assert a.status == "finished" and len(a.history) == 3
        assert history_mismatch(b.history, a.history, TIGHT) == []


def test_once_compiling_has_failed_the_compiled_batch_norm_is_the_eager_reduce_one(monkeypatch):
    from fcn_sweep import kernels

    from .test_kernels import _norm

    monkeypatch.setattr(inductor, "failed", "BackendCompilerFailed: RuntimeError: Compiler: cc is not found")
    monkeypatch.setattr(kernels, "_BN_COMPILED", (Compiled(unsupported_python), Compiled(unsupported_python)))
    z, dy = 3 + 2 * torch.randn(3, 48, 32), torch.randn(3, 48, 32)
    outs = {}
    for impl in ("reduce", "compiled"):
        bn, norm = kernels.BN_IMPLS[impl], _norm(3, 48, 7)
        y, saved = bn.forward(z, norm, True)
        dz = bn.backward(dy, kernels.Tape(z, z, y, y, None, saved), norm)
        outs[impl] = (y, *saved, dz, norm.mean, norm.var, norm.dgamma, norm.dbeta)
    for a, b in zip(outs["reduce"], outs["compiled"], strict=True):
        assert torch.equal(a, b)
