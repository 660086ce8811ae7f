"""`fcn-sweep bench`: where a training step's time goes, measured side by side in one process.

Five ways to train the same network (by default 784-1024-256-10 with batch norm, dropout 0.3,
Adam, batch 64) for the same number of steps:

- naive: the loop most tutorials write: torchvision's FashionMNIST with ToTensor and Normalize
  per sample, a shuffling DataLoader, nn.Sequential, torch.optim.Adam and `loss.item()` each step;
- project: this package's training of one run (`packed.Pack`, a pack of one) on its device-resident data;
- floor: the matrix multiplies alone, forward and backward, of every layer (no gradient for the
  input images, which no implementation computes), into preallocated outputs: what any
  implementation of this step must pay on this device;
- floor+update: the floor plus the project's optimizer update of the weights each step. The floor
  loop keeps its weights and gradients (8.6 MB for 784-1024-256-10) hot in cache; a real Adam step
  also streams both moments through memory and evicts them, which no implementation avoids. The
  gap between this and `floor` is that price on this machine, and `project/(floor+update)` is
  how far the project is from a step that pays only matrix multiplies and the update;
- packed K: K configs trained at once by `packed.py`, time per config.

Shared machines are noisy, so every variant runs once per repeat, interleaved, and the report is
the median over repeats. Ratios compare variants measured in the same repeats. Times cover
training steps only; evaluation is the same for every variant and left out.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import data as data_mod
from .config import RunConfig
from .optim import Optimizer
from .packed import Pack

TRAIN_SIZE = 50_000  # one epoch of the project's training split


def bench_config(hidden: tuple[int, ...] = (1024, 256)) -> RunConfig:
    return RunConfig(hidden=hidden, batch_norm=True, dropout=0.3, optimizer="adam", lr=1e-3, batch_size=64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn: Callable[[], object]) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


# --- naive ----------------------------------------------------------------------------------------


def _torchvision_root(data_dir: str | None) -> Path:
    """The verified IDX files, decompressed where torchvision looks for them (it reads no .gz)."""
    root = Path(tempfile.mkdtemp(prefix="fcn-sweep-bench-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, path in data_mod.locate(data_dir).items():
        (raw / name).write_bytes(data_mod.read_bytes(path))
    return root


def naive_variant(cfg: RunConfig, device: torch.device, steps: int, data_dir: str | None) -> Callable[[], float]:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    dataset = datasets.FashionMNIST(str(_torchvision_root(data_dir)), train=True, transform=tf)
    layers: list[nn.Module] = [nn.Flatten()]
    width_in = 28 * 28
    for width in cfg.hidden:
        layers += [nn.Linear(width_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(cfg.dropout_rates()[0])]
        width_in = width
    model = nn.Sequential(*layers, nn.Linear(width_in, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    criterion = nn.CrossEntropyLoss()

    def train() -> None:
        model.train()
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True)
        running_loss = 0.0
        for step, (images, labels) in enumerate(loader):
            if step == steps:
                break
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()

    return lambda: _timed(device, train)


# --- project and packed --------------------------------------------------------------------------


def _first(split: data_mod.Split, n: int) -> data_mod.Split:
    return data_mod.Split(split.x[:n], split.y[:n])


def project_variant(cfg: RunConfig, data: data_mod.FashionMNIST, steps: int) -> Callable[[], float]:
    solo = Pack([cfg], data.device)
    split = _first(data.train, steps * cfg.batch_size)
    return lambda: _timed(data.device, lambda: solo.train_epoch(split, lambda: False))


def packed_variant(cfg: RunConfig, data: data_mod.FashionMNIST, steps: int, k: int) -> Callable[[], float]:
    """Seconds for `steps` steps of K configs (K seeds of `cfg`), divided by K."""
    cfgs = [replace(cfg, seed=seed) for seed in range(k)]
    pack = Pack(cfgs, data.device)
    split = _first(data.train, steps * cfg.batch_size)
    return lambda: _timed(data.device, lambda: pack.train_epoch(split, lambda: False)) / k


# --- floor ---------------------------------------------------------------------------------------


def floor_variant(cfg: RunConfig, data: data_mod.FashionMNIST, steps: int, update: bool = False) -> Callable[[], float]:
    device, b = data.device, cfg.batch_size
    widths = [28 * 28, *cfg.hidden, 10]
    weights = [torch.randn(o, i, device=device) * i**-0.5 for i, o in itertools.pairwise(widths)]
    acts = [data.train.x[:b].clone(), *(torch.empty(b, w, device=device) for w in widths[1:])]
    grads_w = [torch.empty_like(w) for w in weights]
    grads_x = [torch.empty_like(a) for a in acts]
    for w, g in zip(weights, grads_w, strict=True):
        w.grad = g
    opt = Optimizer(weights, cfg) if update else None  # its moments are memory the plain floor must not touch

    def train() -> None:
        for _ in range(steps):
            for i, w in enumerate(weights):
                torch.mm(acts[i], w.t(), out=acts[i + 1])
            for i in reversed(range(len(weights))):
                torch.mm(acts[i + 1].t(), acts[i], out=grads_w[i])  # acts[i + 1] stands in for its gradient
                if i:
                    torch.mm(acts[i + 1], weights[i], out=grads_x[i])
            if opt:
                opt.step()

    return lambda: _timed(device, train)


# --- the report ----------------------------------------------------------------------------------


def measure(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant per repeat; a first untimed round warms caches and allocators."""
    for run in variants.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            times[name].append(run())
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over repeats of a/b, each repeat's pair measured back to back."""
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def report(times: dict[str, list[float]], steps: int, pack: int, cfg: RunConfig, epochs: int, header: str) -> list[str]:
    steps_per_epoch = len(data_mod.batch_starts(TRAIN_SIZE, cfg.batch_size))
    per_epoch = {name: statistics.median(ts) / steps * steps_per_epoch for name, ts in times.items()}
    packed = f"packed {pack}"
    lines = [header, f"{'variant':<12} {'s/epoch':>9} {'ms/step':>9}"]
    lines += [f"{name:<12} {s:>9.3f} {s / steps_per_epoch * 1e3:>9.3f}" for name, s in per_epoch.items()]
    lines += [
        f"naive/project  {ratio(times, 'naive', 'project'):.2f}",
        f"project/floor  {ratio(times, 'project', 'floor'):.2f}",
        f"project/(floor+update)  {ratio(times, 'project', 'floor+update'):.2f}  "
        f"(floor+update/floor {ratio(times, 'floor+update', 'floor'):.2f}: the optimizer's pass over memory)",
        f"{packed}/floor  {ratio(times, packed, 'floor'):.2f}  (per config)",
    ]
    per_hour = lambda name: 3600 / (per_epoch[name] * epochs)  # noqa: E731
    lines.append(
        f"configs/hour ({epochs} epochs, training only): one at a time {per_hour('project'):.1f}, "
        f"{pack} packed {per_hour(packed):.1f}; packed/one-at-a-time {ratio(times, 'project', packed):.2f}x "
        "(median of paired ratios)"
    )
    return lines


def bench(
    device: torch.device,
    steps: int = 200,
    repeats: int = 5,
    pack: int = 8,
    hidden: tuple[int, ...] = (1024, 256),
    epochs: int = 20,
    data_dir: str | None = None,
) -> list[str]:
    cfg = bench_config(hidden)
    data = data_mod.load(device, data_dir=data_dir)
    variants = {
        "naive": naive_variant(cfg, device, steps, data_dir),
        "project": project_variant(cfg, data, steps),
        "floor": floor_variant(cfg, data, steps),
        "floor+update": floor_variant(cfg, data, steps, update=True),
        f"packed {pack}": packed_variant(cfg, data, steps, pack),
    }
    times = measure(variants, repeats)
    header = (
        f"fcn-sweep bench: {cfg.arch} batch norm, dropout {cfg.dropout}, {cfg.optimizer}, batch {cfg.batch_size}; "
        f"{steps} steps x {repeats} repeats (median) on {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    return report(times, steps, pack, cfg, epochs, header)
