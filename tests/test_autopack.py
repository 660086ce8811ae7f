"""`--pack auto`: the K chosen from a device's facts (no device needed), and the facts it reads."""

from fcn_sweep.config import RunConfig
from fcn_sweep.sweep.autopack import MAX_PACK, MEMORY_SHARE, DeviceFacts, choose_pack, device_facts, member_bytes

GIB = 1 << 30
BIG = member_bytes(RunConfig(hidden=(1024, 512), batch_norm=True))


def test_a_large_gpu_packs_every_pending_run_of_one_shape():
    # The study's grid: 18 pack_keys of 324 runs each, on a 139 GiB H200.
    k, why = choose_pack(DeviceFacts("cuda", 139 * GIB), [324] * 18, BIG)
    assert k == 324 and "pending" in why


def test_a_gpu_pack_fits_its_memory_share():
    k, why = choose_pack(DeviceFacts("cuda", 10 * BIG), [324], BIG)
    assert k == int(10 * MEMORY_SHARE) and "memory" in why


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
