"""`fcn-sweep bench` end to end with tiny step counts: the report's structure and accounting, never
its timings."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from fcn_sweep.bench.limits import step_flops
from fcn_sweep.bench.report import Limits, report
from fcn_sweep.bench.variants import bench_config
from fcn_sweep.cli.bench import parse_packs
from fcn_sweep.config import RunConfig

from .conftest import cli, needs_data

TINY_SWEEP = """\
name: tiny
method: grid
metric: {name: val/acc, goal: maximize}
parameters:
  epochs: {value: 2}
  subset: {value: 1024}
  hidden: {value: [32]}
  optimizer: {values: [adam, sgd]}
"""
NUMBER = r"(\d[\d,]*\.?\d*)"


@needs_data
def test_bench_reports_each_variant_against_the_device_limit(tmp_path):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(TINY_SWEEP)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = cli(
        "bench", "--device=cpu", "--steps=2", "--repeats=1", "--pack=2,1", "--hidden=32", "--epochs=3",
        f"--sweep={sweep}", "--bn=reduce", "--update=compiled", env={"TMPDIR": str(tmp)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(
        "fcn-sweep bench: 32 batch norm (reduce), dropout 0.3, adam (compiled), batch 64, matmul precision highest; "
        "2 steps x 1 repeats"
    )
    assert re.search(rf"^peak: 1024x1024 fp32 matmul {NUMBER} GFLOP/s", out, flags=re.M), out
    rows = {}
    for variant in ("naive", "project", "floor", "floor+update", "packed 2"):
        cells = rf" +(\d+) +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}% +(\d+|–)$"
        match = re.search(rf"^{re.escape(variant)}{cells}", out, flags=re.M)
        assert match, (variant, out)
        rows[variant] = match.groups()
    # One step of a pack of 2 does twice the arithmetic of one alone; every variant does a step's worth.
    assert rows["packed 2"][0] == "2" and float(rows["packed 2"][3]) == pytest.approx(
        2 * float(rows["project"][3]), rel=1e-3
    )
    assert {rows[v][3] for v in ("naive", "project", "floor", "floor+update")} == {rows["project"][3]}
    assert rows["project"][6] != "–" and rows["naive"][6] == "–"
    for ratio in ("naive/project", "project/floor", "project/(floor+update)", "packed 2/floor"):
        match = re.search(rf"^{re.escape(ratio)} +{NUMBER}", out, flags=re.M)
        assert match and float(match.group(1)) > 0, ratio
    ops = re.search(r"^ops/step \(torch.profiler.*\): K=1 (\d+), K=2 (\d+)$", out, flags=re.M)
    assert ops and ops.groups() == (rows["project"][6], rows["packed 2"][6]), out
    assert re.search(
        rf"^configs/hour \(3 epochs, training only\): K=1 {NUMBER}, K=2 {NUMBER}; best K=[12]", out, flags=re.M
    ), out
    assert re.search(
        r"^tiny.yaml: 2 runs, 4 epochs at --pack [12] on this cpu \(one worker, \d+ thread\(s\)\): "
        r"wall \d+(\.\d)? (s|min|hours|days)",
        out,
        flags=re.M,
    ), out
    # The tutorial loop's copy of the data is gone; what is left is torch's own compile cache, which
    # torch.optim (the tutorial's Adam) creates for every process that uses it and means to keep.
    assert [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_bench_refuses_bad_arguments_with_exit_code_2_and_one_line():
    proc = cli("bench", "--steps=0")
    assert proc.returncode == 2 and "--steps" in proc.stderr
    proc = cli("bench", "--device=cpu", "--hidden=0")
    assert proc.returncode == 2 and "hidden" in proc.stderr.strip().splitlines()[-1]
    for bad in ("1,x", "0"):
        proc = cli("bench", "--device=cpu", f"--pack={bad}")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--pack" in lines[0] and "1,16,128" in lines[0], bad
    proc = cli("bench", "--device=cpu", "--matmul-precision=medium")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "highest, high" in lines[0]
    proc = cli("bench", "--device=cpu", "--bn=fused")
    assert proc.returncode == 2 and "--bn" in proc.stderr and "native" in proc.stderr and "reduce" in proc.stderr
    proc = cli("bench", "--device=cpu", "--update=fused")
    assert proc.returncode == 2 and "--update" in proc.stderr and "'grouped', 'stacked', 'compiled'" in proc.stderr


def test_the_bench_offers_every_batch_norm_of_the_kernels_and_puts_the_default_back():
    from fcn_sweep import kernels, packed
    from fcn_sweep.cli.bench import BN_IMPLS

    assert tuple(kernels.BN_IMPLS) == BN_IMPLS
    assert (packed.bn_name("cpu"), packed.bn_name("cuda")) == ("native", "native")
    with packed.defaults("cuda", bn="reduce"):
        assert packed.Pack([RunConfig(hidden=(8,), batch_norm=True)], "cpu").bn_name == "native"
        assert packed.bn_name("cuda") == "reduce"
    assert packed.bn_name("cuda") == "native"
    with packed.defaults("cpu", bn="compiled"):
        assert packed.Pack([RunConfig(hidden=(8,), batch_norm=True)], "cpu").bn is kernels.BN_IMPLS["compiled"]
    with packed.defaults("cpu", bn=None):
        assert packed.bn_name("cpu") == "native"
    assert packed.bn_name("cpu") == "native"
    with pytest.raises(ValueError, match="expected one of native, reduce"):
        packed.defaults("cpu", bn="fused").__enter__()


def test_the_bench_offers_every_update_of_the_trainer_and_puts_the_default_back():
    from fcn_sweep import packed
    from fcn_sweep.cli.bench import UPDATE_IMPLS

    assert tuple(packed.UPDATE_IMPLS) == UPDATE_IMPLS
    assert (packed.update_name("cpu"), packed.update_name("cuda")) == ("grouped", "stacked")
    with packed.defaults("cuda", update="compiled"):
        assert packed.Pack([RunConfig(hidden=(8,))], "cpu").update_kind is packed.UPDATE_IMPLS["grouped"]
        assert packed.update_name("cuda") == "compiled"
    assert packed.update_name("cuda") == "stacked"
    with packed.defaults("cpu", update="stacked"):
        assert packed.Pack([RunConfig(hidden=(8,))], "cpu").update_kind is packed.UPDATE_IMPLS["stacked"]
    assert packed.update_name("cpu") == "grouped"
    with pytest.raises(ValueError, match="expected one of grouped, stacked, compiled"):
        packed.defaults("cpu", update="fused").__enter__()


def test_pack_lists_parse_to_sorted_distinct_sizes():
    assert parse_packs("16, 1,4,4") == (1, 4, 16)


@pytest.mark.parametrize(("hidden", "batch", "k"), [((1024, 256), 64, 1), ((32,), 128, 3)])
def test_step_flops_are_the_matrix_multiplies_autograd_runs(hidden, batch, k):
    """Forward and backward of bias-free Linear layers on images that need no gradient, as counted
    by torch's own FLOP counter, equal the bench's count from the widths."""
    widths = [28 * 28, *hidden, 10]
    weights = [torch.randn(k, i, o, requires_grad=True) for i, o in itertools.pairwise(widths)]
    with FlopCounterMode(display=False) as counter:
        h = torch.randn(k, batch, 28 * 28)
        for w in weights:
            h = torch.relu(torch.bmm(h, w))
        h.sum().backward()
    assert counter.get_total_flops() == step_flops(hidden, batch, k)


def _report_of(times):
    cfg = bench_config()
    ks = {name: 8 if name == "packed 8" else 1 for name in times}
    limits = Limits(1e11, 1024, lambda k: step_flops(cfg.hidden, cfg.batch_size, k), {"project": 87, "packed 8": 87})
    return report(times, ks, 10, cfg, 20, limits)[0]


def test_ratios_carry_their_range_over_repeats_and_an_unsteady_run_says_so():
    """Seconds per config per repeat, made up: ratios are medians of paired ratios with their range;
    a variant whose repeats spread past UNSTEADY (a busy shared machine) is named."""
    steady = {
        "naive": [0.15, 0.15, 0.15],
        "project": [0.050, 0.052, 0.054],
        "floor": [0.040, 0.040, 0.040],
        "floor+update": [0.040, 0.040, 0.045],
        "packed 8": [0.045, 0.046, 0.045],
    }
    lines = _report_of(steady)
    assert "project/floor  1.30 [1.25-1.35]" in lines
    assert "project/(floor+update)  1.25 [1.20-1.30]  (floor+update/floor 1.00 [1.00-1.12]: " in "\n".join(lines)
    assert lines[-1].endswith("best K=8: 1.13x [1.11-1.20] one at a time (median of paired ratios)")
    assert not any(line.startswith("unsteady") for line in lines)
    busy = steady | {"floor+update": [0.040, 0.080, 0.041]}  # one repeat hit a busy spell
    lines = _report_of(busy)
    assert "unsteady: floor+update took 4.000 to 8.000 ms a step over 3 repeats" in "\n".join(lines)
