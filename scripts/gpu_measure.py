"""What docs/gpu.md reports beside the bench, on one GPU (scripts/gpu_check.sh runs it):

1. footprint.py's bound on a member's memory against `torch.cuda.max_memory_allocated`, for packs of
   1, 64 and 512 of the study's widest shape (784-1024-512-10, batch norm, dropout, Adam, batch 64)
   after training steps, a captured graph and an evaluation;
2. a pack whose 64 members all have different lrs (a bayes sweep's continuous lr) on a cosine
   schedule, stepped by the grouped fused update (optim.PackUpdate, one kernel call per member) and
   by the stacked one (stacked.StackedUpdate, what a CUDA pack uses) and the compiled one
   (compiled.CompiledUpdate, one Triton kernel per tensor): ms per step once captured, how many
   times each captured its graph over three epochs, and each against the stacked update.
3. the update alone, no training around it, for Adam and SGD: each update kind's ms a step for a
   pack whose members each have their own lr (K=512 on CUDA, 16 on a CPU), and each against the
   stacked update.
Usage: python scripts/gpu_measure.py [--device cuda:N | --device cpu]   (on a CPU only 3., one thread)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's package, installed or not

from fcn_sweep import data as data_mod
from fcn_sweep.compiled import CompiledUpdate
from fcn_sweep.config import RunConfig
from fcn_sweep.footprint import gib, member_bytes
from fcn_sweep.optim import PackUpdate
from fcn_sweep.packed import Pack
from fcn_sweep.stacked import StackedUpdate

WIDEST = RunConfig(hidden=(1024, 512), batch_norm=True, dropout=0.3, optimizer="adam", lr=1e-3, batch_size=64)


def first(split: data_mod.Split, n: int) -> data_mod.Split:
    return data_mod.Split(split.x[:n], split.y[:n])


def footprint(device: torch.device, data: data_mod.FashionMNIST) -> None:
    split = first(data.train, 8 * WIDEST.batch_size)
    for k in (1, 64, 512):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        pack = Pack([replace(WIDEST, seed=i) for i in range(k)], device)
        pack.train_epoch(split, lambda: False)
        pack.evaluate(data.val)
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / k
        bound = member_bytes(WIDEST)
        print(f"footprint {WIDEST.arch} K={k}: measured peak {gib(peak)} a member, formula {gib(bound)} "
              f"(measured/formula {peak / bound:.2f})", flush=True)  # fmt: skip
        del pack


def continuous_lrs(device: torch.device, data: data_mod.FashionMNIST, k: int = 64, steps: int = 200) -> None:
    cfg = replace(WIDEST, hidden=(1024, 256), epochs=3, schedule="cosine")
    cfgs = [replace(cfg, seed=i, lr=1e-3 * (1 + i / k)) for i in range(k)]
    split = first(data.train, steps * cfg.batch_size)
    best: dict[type, float] = {}
    for update in (PackUpdate, StackedUpdate, CompiledUpdate):
        pack = Pack(cfgs, device, update=update)
        captures = 0
        capture = pack.graphs._capture

        def counted(step, capture=capture):
            nonlocal captures
            captures += 1
            return capture(step)

        pack.graphs._capture = counted
        times = []
        for epoch in range(1, cfg.epochs + 1):
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            pack.train_epoch(split, lambda: False)
            torch.cuda.synchronize(device)
            times.append((time.perf_counter() - t0) / steps * 1e3)
            pack.set_epoch(epoch)
        best[update] = min(times[1:])
        line = f"{k} members, every lr its own, cosine: {update.__name__}: {best[update]:.3f} ms/step "
        failed = getattr(pack.update, "failed", None)
        how = f"eager, capture failed: {pack.graphs.failed}" if pack.graphs.failed else "captured"
        how += f"; compile failed: {failed}" if failed else ""
        print(f"{line}{how} (first epoch {times[0]:.3f}), {captures} capture(s) in {cfg.epochs} epochs", flush=True)
    for update in (PackUpdate, CompiledUpdate):
        print(f"{update.__name__}/StackedUpdate ms per step: {best[update] / best[StackedUpdate]:.2f}", flush=True)


def updates_alone(device: torch.device, k: int, steps: int = 10) -> None:
    """The update alone, no training around it: a pack of 784-1024-256-10 whose k members each have
    their own lr, stepped by each update kind (grouped, stacked, compiled), Adam and SGD; ms a step
    (the median of `steps`, after a first step that compiles) and each against the stacked update."""
    shapes = [(k, 1024, 784), (k, 256, 1024), (k, 10, 256), (k, 1024, 1), (k, 256, 1), (k, 10, 1)]
    for optimizer in ("adam", "sgd"):
        cfgs = [RunConfig(optimizer=optimizer, lr=1e-3 * (1 + i / k)) for i in range(k)]
        params = [torch.randn(s, device=device) for s in shapes]
        grads = [torch.randn(s, device=device) for s in shapes]
        ms: dict[str, float] = {}
        for kind in (PackUpdate, StackedUpdate, CompiledUpdate):
            update = kind(params, grads, cfgs)
            t0 = time.perf_counter()
            update.step()  # the compiled update compiles here
            sync(device)
            first = time.perf_counter() - t0
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                update.step()
                sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
            ms[kind.__name__] = statistics.median(times)
            print(f"update alone, {optimizer}, K={k} of 784-1024-256-10, every lr its own, {device}: "
                  f"{kind.__name__} {ms[kind.__name__]:.3f} ms (first step {first:.1f} s)", flush=True)  # fmt: skip
        ratios = ", ".join(f"{name}/StackedUpdate {t / ms['StackedUpdate']:.2f}" for name, t in ms.items())
        print(f"update alone, {optimizer}: {ratios}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    device = torch.device(p.parse_args().device)
    if device.type == "cpu":  # one thread: two on a shared 2-core machine time noise (docs/speed.md)
        torch.set_num_threads(1)
        updates_alone(device, k=16)
        return
    if device.type != "cuda" or not torch.cuda.is_available():
        sys.exit(f"gpu_measure: error: needs a CUDA device or --device cpu, got {device} (torch.cuda.is_available() "
                 f"{torch.cuda.is_available()})")  # fmt: skip
    data = data_mod.load(device)
    footprint(device, data)
    continuous_lrs(device, data)
    updates_alone(device, k=512)


if __name__ == "__main__":
    main()
