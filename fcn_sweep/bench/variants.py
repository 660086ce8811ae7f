"""The ways `fcn-sweep bench` trains one network for a number of steps; each is a `Variant` whose
`run()` returns the seconds those steps took (the device synchronised at both ends).

- naive: the loop most tutorials write: torchvision's FashionMNIST with ToTensor and Normalize
  per sample, a shuffling DataLoader, nn.Sequential, torch.optim.Adam and `loss.item()` each step;
- project: this package's trainer on its device-resident data, a pack of one (`Pack([cfg])`),
  which is how `fcn-sweep train` trains a run;
- floor: the matrix multiplies alone, forward and backward, of every layer (no gradient for the
  input images, which no implementation computes), into preallocated outputs: what any
  implementation of this step must pay on this device;
- floor+update: the floor plus the project's optimizer update of the weights each step. The floor
  loop keeps its weights and gradients (8.6 MB for 784-1024-256-10) hot in cache; a real Adam step
  also streams both moments through memory and evicts them, which no implementation avoids;
- packed K: K configs (K seeds of one config) trained at once by the same trainer.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import data as data_mod
from ..config import RunConfig
from ..optim import Optimizer
from ..packed import Pack


@dataclass(frozen=True)
class Variant:
    run: Callable[[], float]  # seconds for the bench's steps
    k: int = 1  # configs trained by those steps
    pack: Pack | None = None  # the trainer, where the variant is one (its operations are counted)


def bench_config(hidden: tuple[int, ...] = (1024, 256), precision: str = "highest") -> RunConfig:
    return RunConfig(hidden=hidden, batch_norm=True, dropout=0.3, optimizer="adam", lr=1e-3, batch_size=64,
                     matmul_precision=precision)  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def first(split: data_mod.Split, n: int) -> data_mod.Split:
    return data_mod.Split(split.x[:n], split.y[:n])


# --- naive ----------------------------------------------------------------------------------------


def _torchvision_dataset(data_dir: str | None):
    """torchvision's FashionMNIST over the verified IDX files. It reads no .gz, so the files are
    decompressed into a temporary folder, which goes as soon as the dataset has read them (its
    constructor loads every image into memory)."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    with tempfile.TemporaryDirectory(prefix="fcn-sweep-bench-") as root:
        raw = Path(root) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for name, path in data_mod.locate(data_dir).items():
            (raw / name).write_bytes(data_mod.read_bytes(path))
        return datasets.FashionMNIST(root, train=True, transform=tf)


def naive_variant(cfg: RunConfig, device: torch.device, steps: int, data_dir: str | None) -> Variant:
    dataset = _torchvision_dataset(data_dir)
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

    return Variant(lambda: timed(device, train))


# --- the project's trainer: alone and packed -------------------------------------------------------


def packed_variant(cfg: RunConfig, data: data_mod.FashionMNIST, steps: int, k: int) -> Variant:
    """`steps` steps of K configs (K seeds of `cfg`) as one pack; K=1 is a run trained alone."""
    pack = Pack([replace(cfg, seed=seed) for seed in range(k)], data.device)
    split = first(data.train, steps * cfg.batch_size)
    return Variant(lambda: timed(data.device, lambda: pack.train_epoch(split, lambda: False)), k, pack)


# --- floor ---------------------------------------------------------------------------------------


def floor_variant(cfg: RunConfig, data: data_mod.FashionMNIST, steps: int, update: bool = False) -> Variant:
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

    return Variant(lambda: timed(device, train))
