"""Where a pack's training step spends its time, kernel by kernel (issue 28: on an H200 the packed
trainer reaches about 12% of the fp32 matmul rate; docs/gpu.md names the suspects).

For the study's network (784-1024-256-10, dropout 0.3, batch 64), with and without batch norm, Adam
and SGD, at packs of 128 and 512 on CUDA; with batch norm every implementation of kernels.BN_IMPLS
(`native`: aten's kernels over the (1, K*width, 64) view; `reduce`: reductions over the batch and
fused multiply-adds; `compiled`: `reduce` through torch.compile), and with Adam the fastest of them
with TF32 products; then, with the fastest
batch norm, the compiled update (fcn_sweep/compiled.py: one Inductor kernel per parameter tensor)
against the device's default, the stacked foreach update. First a check that
each batch norm equals `native` on this device at the study's widths. Then two passes over the cases:

1. timings: ms per step over `--steps` steps as the trainer runs them (captured and replayed on
   CUDA), the median of `--repeats` epochs, each case's FLOP/s of the products against a 4096x4096
   fp32 matmul measured in this process (fcn_sweep/bench/limits.py), and whether it was captured;
   then a table: no batch norm, each batch norm, their ratio, batch norm's share of the step, and
   configs per hour with the faster one;
2. profiles (torch.profiler, CUDA activity): the top kernels of one epoch of captured steps by GPU
   time (calls, total ms, ms per step, share of the step), their time by kind (matmul, aten's batch
   norm, reductions, the optimizer's foreach kernels, ...) and summed (the GPU's busy share of the
   step); and the top-level operations of 3 eager steps by their kernels' GPU time (which operation
   runs what).

The timings come first so that a profiler that fails or hangs on the device leaves them printed.
About 2-3 minutes on an H200. `--device cpu` runs the same with tiny sizes (packs of 2 and 8 of
128-64, 10 steps, one thread): the CPU's "kernels" are aten operations by their own CPU time, and
nothing is captured.
Usage: python scripts/gpu_profile.py [--device cuda|cpu] [--packs K,K] [--steps N] [--repeats R]
       [--hidden W,W] [--no-tf32] [--no-compiled] [--time-only] [--out FILE]   (every line appended to FILE as it is
       said, every figure in FILE's .json; default $OUT/gpu_profile.txt when OUT is set)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not

from fcn_sweep import data as data_mod
from fcn_sweep import inductor, kernels
from fcn_sweep.bench.limits import PEAK_SIZE, peak_flops, quiet_fd2, step_flops
from fcn_sweep.bench.report import TRAIN_SIZE
from fcn_sweep.config import RunConfig
from fcn_sweep.packed import UPDATE_IMPLS, Pack, update_name

DEFAULTS = {
    "cuda": {"packs": "128,512", "hidden": "1024,256", "steps": 20, "repeats": 3},
    "cpu": {"packs": "2,8", "hidden": "128,64", "steps": 10, "repeats": 3},
}
TOP, TOP_OPS, EAGER_STEPS = 12, 8, 3
# Kinds of kernel (CUDA names) or operation (aten names), the first that matches a name in lower case.
KINDS = (
    ("matmul", ("gemm", "gemv", "xmma", "cutlass", "splitk", "aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm")),
    ("batch norm (aten)", ("batch_norm",)),
    ("optimizer (foreach)", ("multi_tensor_apply", "foreach")),
    ("optimizer (compiled)", ("triton_", "cpp_fused")),
    ("reductions", ("reduce_kernel", "aten::sum", "aten::var_mean", "aten::mean", "aten::argmax")),
    ("gather/scatter", ("index", "gather", "scatter")),
    ("softmax", ("softmax",)),
    ("copies", ("memcpy", "memset", "copy", "fill")),
    ("elementwise", ("elementwise", "aten::")),
)
GENERIC = re.compile(r"^(\w*elementwise_kernel\w*|reduce_kernel|multi_tensor_apply_kernel|index_elementwise_kernel)$")
DETAIL = re.compile(r"[A-Za-z_]\w*(?:Functor|_functor|Ops|Op|_kernel_cuda|_kernel_impl|_kernel)\b")
PLUMBING = {"ReduceOp", "TensorListMetadata"}  # template arguments that say nothing of what a kernel computes

OUT_FILE: list[Path] = []  # --out, where every line said is appended as it is said


def say(text: str = "") -> None:
    print(text, flush=True)
    for path in OUT_FILE:
        with path.open("a") as f:
            f.write(text + "\n")


def kind(name: str) -> str:
    low = name.lower()
    return next((k for k, keys in KINDS if any(key in low for key in keys)), "other")


def short(name: str, width: int = 64) -> str:
    """A kernel's C++ name cut to what tells it apart: its template's name, and for torch's generic
    kernels the functor or function they run (`vectorized_elementwise_kernel[MulFunctor]`)."""
    s = re.sub(r"\bvoid |at::native::|at::|c10::|\(anonymous namespace\)::|std::", "", name)
    base = re.split(r"[<(]", s, maxsplit=1)[0].strip()
    if GENERIC.match(base):
        found = [d for d in DETAIL.findall(s[len(base) :]) if d != base and d not in PLUMBING]
        base += f"[{found[0]}]" if found else ""
    return base if len(base) <= width else base[: width - 1] + "…"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def epoch_s(pack: Pack, split: data_mod.Split) -> float:
    sync(pack.device)
    t0 = time.perf_counter()
    pack.train_epoch(split, lambda: False)
    sync(pack.device)
    return time.perf_counter() - t0


def profiled(pack: Pack, split: data_mod.Split):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if pack.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    prof = torch.profiler.profile(activities=activities)
    with quiet_fd2() if pack.device.type == "cpu" else contextlib.nullcontext():  # the CPU's start/stop lines
        prof.start()
    pack.train_epoch(split, lambda: False)
    sync(pack.device)
    with quiet_fd2() if pack.device.type == "cpu" else contextlib.nullcontext():
        prof.stop()
    return prof


def by_kernel(prof, device: torch.device) -> dict[str, list[float]]:
    """name -> [calls, total µs]: the device's kernels (CUDA), or aten ops by their own time (CPU)."""
    out: dict[str, list[float]] = {}
    for e in prof.key_averages():
        on_device = not str(e.device_type).endswith("CPU")
        if device.type == "cuda" and on_device:
            out[e.key] = [e.count, e.self_device_time_total]
        elif device.type == "cpu" and e.key.startswith("aten::"):
            out[e.key] = [e.count, e.self_cpu_time_total]
    return out


def by_top_level_op(prof) -> dict[str, list[float]]:
    """name -> [calls, µs of GPU time of the kernels it and the ops under it ran]: top-level aten ops."""
    out: dict[str, list[float]] = {}
    for e in prof.events():
        if not e.name.startswith("aten::") or not str(e.device_type).endswith("CPU"):
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            row = out.setdefault(e.name, [0, 0.0])
            row[0] += 1
            row[1] += e.device_time_total
    return out


def table(rows: dict[str, list[float]], steps: int, step_ms: float, top: int, what: str) -> list[str]:
    total_ms = steps * step_ms
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][1])
    out = [f"  {what:<64} {'calls':>6} {'total ms':>9} {'ms/step':>8} {'share':>6}"]
    for name, (calls, us) in ranked[:top]:
        ms = us / 1e3
        out.append(f"  {short(name):<64} {calls:>6} {ms:>9.3f} {ms / steps:>8.3f} {ms / total_ms:>6.1%}")
    if len(ranked) > top:
        rest = sum(us for _, (_, us) in ranked[top:]) / 1e3
        others = f"{len(ranked) - top} others"
        out.append(f"  {others:<64} {'':>6} {rest:>9.3f} {rest / steps:>8.3f} {rest / total_ms:>6.1%}")
    kinds: dict[str, float] = {}
    for name, (_, us) in rows.items():
        kinds[kind(name)] = kinds.get(kind(name), 0.0) + us / 1e3
    busy = sum(kinds.values())
    ranked_kinds = sorted(kinds.items(), key=lambda kv: -kv[1])
    out.append("  by kind: " + ", ".join(f"{k} {ms / total_ms:.1%}" for k, ms in ranked_kinds))
    out.append(f"  summed: {busy / steps:.3f} ms/step, {busy / total_ms:.1%} of the step")
    return out


def prepare(pack: Pack, split: data_mod.Split, bn: str | None, precision: str, update: str) -> str:
    """Set a case up on its pack (batch norm, matmul precision, update), warm up (compiling an update
    that compiles) and capture: how it steps."""
    if pack.update_kind is not UPDATE_IMPLS[update]:
        pack.use_update(UPDATE_IMPLS[update])
    if bn is not None:  # another batch norm on the same pack: its kernels differ, so a new graph
        pack.bn, pack.bn_name = kernels.BN_IMPLS[bn], bn
    pack.precision = precision  # "high": TF32 products, which a graph captures as it captures the kernels
    if pack.graphs is not None:
        pack.graphs.clear()
    pack.train_epoch(split, lambda: False)  # warm-up and capture (the graph is kept for this split)
    if pack.device.type == "cpu":
        return "eager (CPU)"
    if pack.graphs is None:
        return "eager (FCN_SWEEP_EAGER)"
    how = f"eager, capture failed: {pack.graphs.failed}" if pack.graphs.failed else "captured"
    failed = getattr(pack.update, "failed", None)  # compiled.CompiledUpdate's, when compiling failed
    return f"{how}; compile failed: {failed}" if failed else how


def time_case(pack: Pack, split: data_mod.Split, case: dict, args, peak: float) -> None:
    """The first pass: ms per step of a case, into `case`, and one line."""
    captured = prepare(pack, split, case["bn"], case["precision"], case["update"])
    times = [epoch_s(pack, split) for _ in range(args.repeats)]
    step_ms = statistics.median(times) / args.steps * 1e3
    flops = step_flops(pack.widths, args.batch, case["k"])
    rate = flops / (step_ms / 1e3)
    case.update(ms_per_step=step_ms, epoch_s=times, gflop_per_step=flops / 1e9, of_peak=rate / peak, captured=captured)
    say(f"{case['label']}: {step_ms:.3f} ms/step ({captured}; {args.repeats} epochs of {args.steps} steps, "
        f"median), {flops / 1e9:.4g} GFLOP/step, {rate / 1e9:,.1f} GFLOP/s, {rate / peak:.1%} of peak")  # fmt: skip


def profile_case(pack: Pack, split: data_mod.Split, case: dict, args) -> None:
    """The second pass: a case's kernels over one epoch of its steps as it trains (captured on CUDA),
    and on CUDA the top-level operations of a few eager steps; into `case`, and tables."""
    prepare(pack, split, case["bn"], case["precision"], case["update"])
    step_ms, cuda = case["ms_per_step"], pack.device.type == "cuda"
    say(f"== {case['label']}: {step_ms:.3f} ms/step ({case['captured']})")
    case["kernels"] = by_kernel(profiled(pack, split), pack.device)
    seen = sum(us for _, us in case["kernels"].values()) / 1e3
    if cuda and seen < 0.1 * args.steps * step_ms:
        say(f"  the profile of the captured steps saw {seen:.3f} ms of kernels: too few (graph replays not "
            "traced?); the kernels of the eager steps below tell where the time goes")  # fmt: skip
    for line in table(case["kernels"], args.steps, step_ms, TOP, "kernel" if cuda else "operation (own CPU time)"):
        say(line)
    if cuda:  # which operation runs which kernels: a few eager steps
        graphs, pack.graphs = pack.graphs, None
        eager = data_mod.Split(split.x[: EAGER_STEPS * args.batch], split.y[: EAGER_STEPS * args.batch])
        prof = profiled(pack, eager)
        pack.graphs = graphs
        case["ops"], case["eager_kernels"] = by_top_level_op(prof), by_kernel(prof, pack.device)
        for line in table(case["ops"], EAGER_STEPS, step_ms, TOP_OPS, f"top-level op ({EAGER_STEPS} eager steps)"):
            say(line)


def check_batch_norms(device: torch.device, widths: tuple[int, ...], batch: int) -> None:
    """Each batch norm of kernels.BN_IMPLS against `native` on this device, one layer of each width,
    K=8: forward, running statistics, dz, dgamma, dbeta, as the largest difference relative to the
    largest value."""
    for other in (name for name in kernels.BN_IMPLS if name != "native"):
        worst = 0.0
        for width in widths:
            g = torch.Generator(device=device).manual_seed(width)
            z = 3 + 2 * torch.randn(8, width, batch, device=device, generator=g)
            dy = torch.randn(8, width, batch, device=device, generator=g)
            gamma, n = 0.5 + torch.rand(8 * width, device=device, generator=g), 8 * width
            outs = []
            for impl in ("native", other):
                zeros = [torch.zeros(n, device=device) for _ in range(4)]  # beta, running mean, dgamma, dbeta
                flat = [gamma.clone(), zeros[0], zeros[1], torch.ones(n, device=device), zeros[2], zeros[3]]
                norm, bn = kernels.Norm(*flat), kernels.BN_IMPLS[impl]
                y, saved = bn.forward(z, norm, True)
                dz = bn.backward(dy, kernels.Tape(z, z, y, y, None, saved), norm)
                outs.append((y, norm.mean, norm.var, dz, norm.dgamma, norm.dbeta))
            for a, b in zip(*outs, strict=True):
                worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
        verdict = "equal to float rounding" if worst < 1e-5 else f"DIFFERENT: do not trust the {other} figures"
        failed = f"; compiling failed: {inductor.failed}" if inductor.failed else ""
        say(f"{other} batch norm against native on {device}, widths {widths}, K=8, batch {batch}: largest "
            f"relative difference {worst:.1e} ({verdict}){failed}")  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--packs", help="pack sizes (default: 128,512 on CUDA, 2,8 on a CPU)")
    p.add_argument("--hidden", help="hidden widths (default: 1024,256 on CUDA, 128,64 on a CPU)")
    p.add_argument("--steps", type=int, help="steps per timed and profiled epoch (default: 20 CUDA, 10 CPU)")
    p.add_argument("--repeats", type=int, help="timed epochs per case, median (default: 3 CUDA, 3 CPU)")
    p.add_argument("--no-tf32", action="store_true", help="leave out the TF32 cases")
    p.add_argument("--no-compiled", action="store_true", help="leave out the compiled update's cases")
    p.add_argument("--time-only", action="store_true", help="the timings and their table, no profiles")
    p.add_argument("--out", help="also write the output here, and every figure to its .json")
    args = p.parse_args()
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_profile: error: no CUDA device here; on the CPU: --device cpu")
    defaults = DEFAULTS[args.device.type]
    args.packs = [int(k) for k in (args.packs or defaults["packs"]).split(",")]
    args.hidden = tuple(int(w) for w in (args.hidden or defaults["hidden"]).split(","))
    args.steps, args.repeats = args.steps or defaults["steps"], args.repeats or defaults["repeats"]
    args.batch = 64
    if args.device.type == "cpu":  # two threads on a shared 2-core machine time noise (docs/speed.md)
        torch.set_num_threads(1)
    if args.out is None and os.environ.get("OUT"):
        args.out = str(Path(os.environ["OUT"]) / "gpu_profile.txt")
    OUT_FILE[:] = [Path(args.out)] if args.out else []
    return args


def packs(args):
    """(k, optimizer, batch norm, pack) for each pack the profile measures, made one at a time."""
    for k in args.packs:
        for optimizer, lr in (("adam", 1e-3), ("sgd", 0.05)):
            for batch_norm in (False, True):
                cfg = RunConfig(hidden=args.hidden, batch_norm=batch_norm, dropout=0.3, optimizer=optimizer, lr=lr,
                                batch_size=args.batch)  # fmt: skip
                pack = Pack([replace(cfg, seed=s) for s in range(k)], args.device)
                yield k, optimizer, batch_norm, pack
                del pack
                gc.collect()
                if args.device.type == "cuda":
                    torch.cuda.empty_cache()


def main() -> None:
    args = parse_args()
    device, t_start = args.device, time.perf_counter()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU thread(s)"
    peak = peak_flops(device)
    say(f"gpu_profile: {name}, torch {torch.__version__}; peak {PEAK_SIZE[device.type]}x{PEAK_SIZE[device.type]} "
        f"fp32 matmul {peak / 1e9:,.1f} GFLOP/s (measured now); 784-{'-'.join(map(str, args.hidden))}-10, "
        f"dropout 0.3, batch {args.batch}")  # fmt: skip
    check_batch_norms(device, args.hidden, args.batch)
    data = data_mod.load(device)
    split = data_mod.Split(data.train.x[: args.steps * args.batch], data.train.y[: args.steps * args.batch])
    # Every case timed first, then every case profiled: should the profiler fail or hang on this
    # device (it has, with CUDA graphs, on some torch and CUDA versions), the timings are out already.
    cases: list[dict] = []
    default = update_name(device.type)
    for k, optimizer, batch_norm, pack in packs(args):
        mine = [{"label": f"K={k} {optimizer} " + (f"batch norm {bn}" if bn else "no batch norm"), "k": k,
                 "optimizer": optimizer, "batch_norm": batch_norm, "bn": bn, "precision": "highest",
                 "update": default}
                for bn in (tuple(kernels.BN_IMPLS) if batch_norm else (None,))]  # fmt: skip
        for case in mine:
            time_case(pack, split, case, args, peak)
        fastest = min(mine, key=lambda c: c["ms_per_step"])
        if batch_norm and optimizer == "adam" and not args.no_tf32:
            tf32 = {**fastest, "label": f"{fastest['label']} TF32", "precision": "high"}
            time_case(pack, split, tf32, args, peak)
            mine.append(tf32)
        if not args.no_compiled:  # last: the pack's update changes for good
            label = f"{fastest['label']}, compiled update"
            fused = {**fastest, "label": label, "update": "compiled", "against": fastest["label"]}
            time_case(pack, split, fused, args, peak)
            mine.append(fused)
        cases += mine
    summary(cases, args)
    write_json(cases, args)
    if not args.time_only:
        say()
        for k, optimizer, batch_norm, pack in packs(args):
            for case in cases:
                if (case["k"], case["optimizer"], case["batch_norm"]) == (k, optimizer, batch_norm):
                    profile_case(pack, split, case, args)
        write_json(cases, args)
    say(f"gpu_profile: {time.perf_counter() - t_start:.0f} s in all")


def write_json(cases: list[dict], args) -> None:
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(cases, indent=1))


def summary(cases: list[dict], args) -> None:
    """ms per step side by side; batch norm's cost as its share of the step; configs per hour (20
    epochs of the 50,000 training images, training only, as `fcn-sweep bench` counts them) and the
    share of the fp32 peak, with the faster batch norm."""
    ms = {c["label"]: c["ms_per_step"] for c in cases}
    default = update_name(args.device.type)
    of_peak = {c["label"]: c["of_peak"] for c in cases}
    epoch_steps = len(data_mod.batch_starts(TRAIN_SIZE, args.batch))

    def configs_per_hour(ms_per_step: float, k: int) -> float:
        return 3600 / (20 * epoch_steps * ms_per_step / 1e3 / k)

    say()
    bns = tuple(kernels.BN_IMPLS)
    say(f"ms/step          {'no BN':>8}" + "".join(f"{'BN ' + bn:>13}" for bn in bns)
        + "".join(f"{bn + '/native':>16}" for bn in bns[1:]) + "  BN's share of the step, each"
        + "  best BN: configs/h  of peak")  # fmt: skip
    for k in args.packs:
        for opt in ("adam", "sgd"):
            base = f"K={k} {opt} "
            plain, by_bn = ms[base + "no batch norm"], [ms[f"{base}batch norm {bn}"] for bn in bns]
            per_hour = configs_per_hour(min(by_bn), k)
            best = max(of_peak[f"{base}batch norm {bn}"] for bn in bns)
            say(f"K={k:<4} {opt:<4} {plain:>12.3f}" + "".join(f"{t:>13.3f}" for t in by_bn)
                + "".join(f"{t / by_bn[0]:>16.2f}" for t in by_bn[1:])
                + "  " + " ".join(f"{1 - plain / t:>5.0%}" for t in by_bn).ljust(28)
                + f"{per_hour:>19,.0f} {best:>8.1%}")  # fmt: skip
    for c in cases:
        if c["precision"] == "high" or c["update"] == "compiled":
            per_hour = configs_per_hour(c["ms_per_step"], c["k"])
            ratio = c["ms_per_step"] / ms[c["against"]] if "against" in c else None
            against = f", {ratio:.2f}x the time of the {default} update's" if ratio else ""
            say(f"{c['label']}: {c['ms_per_step']:.3f} ms/step ({c['captured']}){against}, {per_hour:,.0f} configs/h, "
                f"{c['of_peak']:.1%} of the fp32 peak")  # fmt: skip


if __name__ == "__main__":
    main()
