"""`fcn-sweep bench` end to end with tiny step counts: the report's structure, never its timings."""

import re

from .conftest import cli, needs_data


@needs_data
def test_bench_prints_every_variant_and_the_ratio_lines():
    proc = cli("bench", "--device=cpu", "--steps=2", "--repeats=1", "--pack=2", "--hidden=32", "--epochs=3")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("fcn-sweep bench: 32 batch norm, dropout 0.3, adam, batch 64; 2 steps x 1 repeats")
    number = r"(\d+\.\d+)"
    for variant in ("naive", "project", "floor", "floor+update", "packed 2"):
        assert re.search(rf"^{re.escape(variant)} +{number} +{number}$", out, flags=re.M), variant
    for ratio in ("naive/project", "project/floor", "project/(floor+update)", "packed 2/floor"):
        match = re.search(rf"^{re.escape(ratio)} +{number}", out, flags=re.M)
        assert match and float(match.group(1)) > 0, ratio
    assert re.search(
        rf"^configs/hour \(3 epochs, training only\): one at a time {number}, 2 packed {number}; "
        rf"packed/one-at-a-time {number}x",
        out,
        flags=re.M,
    )


def test_bench_refuses_bad_arguments_with_exit_code_2():
    proc = cli("bench", "--steps=0")
    assert proc.returncode == 2 and "--steps" in proc.stderr
    proc = cli("bench", "--device=cpu", "--hidden=0")
    assert proc.returncode == 2 and "hidden" in proc.stderr.strip().splitlines()[-1]
