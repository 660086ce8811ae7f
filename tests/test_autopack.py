"""`--pack auto`: the K chosen from a device's facts (no device needed), the facts it reads, and the
commands that take it."""

import re

from fcn_sweep.cli import main
from fcn_sweep.config import RunConfig
from fcn_sweep.footprint import PACK_OVERHEAD
from fcn_sweep.sweep.autopack import MAX_PACK, MEMORY_SHARE, DeviceFacts, choose_pack, device_facts, member_bytes
from fcn_sweep.sweep.launch import slurm
from fcn_sweep.sweep.store import Store

from .conftest import cli, needs_data
from .test_slurm import TINY_SWEEP, make_sweep_dir

GIB = 1 << 30
BIG = member_bytes(RunConfig(hidden=(1024, 512), batch_norm=True))


def test_a_large_gpu_packs_every_pending_run_of_one_shape():
    # The study's grid: 18 pack_keys of 324 runs each, on a 139 GiB H200.
    k, why = choose_pack(DeviceFacts("cuda", 139 * GIB), [324] * 18, BIG)
    assert k == 324 and "pending" in why


def test_a_gpu_pack_fits_its_memory_share_less_what_a_pack_holds_whatever_its_size():
    k, why = choose_pack(DeviceFacts("cuda", 40 * BIG), [324], BIG)
    assert k == (int(40 * BIG * MEMORY_SHARE) - PACK_OVERHEAD) // BIG and "memory" in why
    assert k < 20


def test_a_gpu_pack_never_exceeds_the_cap_nor_falls_below_one():
    assert choose_pack(DeviceFacts("cuda", 10_000 * GIB), [100_000], BIG)[0] == MAX_PACK
    assert choose_pack(DeviceFacts("cuda", BIG // 4), [324], BIG)[0] == 1
    assert choose_pack(DeviceFacts("cuda", 139 * GIB), [], BIG)[0] == 1


def test_a_cpu_packs_only_where_the_measurement_says_it_pays():
    cpu = DeviceFacts("cpu", 8 * GIB)
    assert choose_pack(cpu, [324], BIG)[0] == 1  # nothing measured
    assert choose_pack(cpu, [324], BIG, {1: 1.0, 8: 1.02})[0] == 1  # within the tolerance: not worth the latency
    k, why = choose_pack(cpu, [324], BIG, {1: 1.0, 8: 1.4})
    assert k == 8 and "K=8 1.40" in why


def test_measured_sizes_larger_than_can_fill_are_not_chosen():
    assert choose_pack(DeviceFacts("cuda", 139 * GIB), [4], BIG, {1: 1.0, 16: 9.0, 4: 3.0})[0] == 4


def test_a_member_costs_more_the_wider_its_network_and_its_batch():
    small = member_bytes(RunConfig(hidden=(1024, 128)))
    assert small < BIG < member_bytes(RunConfig(hidden=(1024, 512), batch_norm=True, batch_size=512))
    params = 784 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 10 + 10 + 2 * (1024 + 512)
    assert 4 * 4 * params <= BIG  # weights, gradients and two moments, fp32


def test_the_cpu_reports_its_available_memory():
    facts = device_facts("cpu")
    assert facts.kind == "cpu" and facts.free_bytes > 64 << 20


# --- the command line: sweep, worker and slurm workers take --pack auto --------------------------


@needs_data
def test_sweep_dry_run_with_pack_auto_says_the_k_it_would_use(tmp_path, capsys):
    sweep_file = tmp_path / "tiny.yaml"
    sweep_file.write_text(TINY_SWEEP)
    assert main(["sweep", str(sweep_file), "--out", str(tmp_path / "out"), "--dry-run", "--pack", "auto"]) == 0
    out = capsys.readouterr().out
    k = re.search(r"^--pack auto: K=(\d+) on cpu \(measured configs/s K=1 [\d.]+, K=2 [\d.]+", out, flags=re.M)
    assert k, out
    assert re.search(rf"^--pack {k.group(1)}: wall \d+(\.\d)? (s|min|hours|days) on 1 worker", out, flags=re.M), out
    assert not (tmp_path / "out").exists()


def test_pack_must_be_a_positive_integer_or_auto(tmp_path):
    for command in (["sweep", "sweeps/smoke.yaml", "--dry-run"], ["worker", f"sqlite:///{tmp_path}/none.db"]):
        proc = cli(*command, "--pack", "many")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--pack must be a positive integer or auto" in lines[0]


@needs_data
def test_worker_with_pack_auto_chooses_and_trains_the_sweep(tmp_path):
    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    url = f"sqlite:///{sweep_dir / 'sweep.db'}"
    proc = cli("worker", url, "--pack", "auto", "--wandb", "disabled", "--quiet", "--out", str(tmp_path / "w"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^--pack auto: K=[12] on cpu ", proc.stdout, flags=re.M), proc.stdout
    assert Store(url).counts()["finished"] == 2


@needs_data
def test_slurm_workers_pass_pack_auto_to_each_task(tmp_path, capsys):
    sweep_dir = make_sweep_dir(tmp_path / "sweep")
    assert main(["slurm", "workers", str(sweep_dir), "--array", "2", "--pack", "auto", "--dry-run"]) == 0
    assert re.search(r"^--pack auto: K=[12] on cpu ", capsys.readouterr().out, flags=re.M)
    sb = slurm.Sbatch(array=2)
    script = slurm.render_workers(slurm.WorkersJob(str(sweep_dir), "tiny", tmp_path, pack="auto"), sb, tmp_path)
    assert "--pack auto" in script
