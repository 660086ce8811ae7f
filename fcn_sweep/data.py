"""FashionMNIST from the official IDX files: find, verify, load once, keep on the device, slice batches.

Where the files come from, in order: an explicit directory (`--data-dir` or `FCN_SWEEP_DATA`),
Debian's `dataset-fashion-mnist` package, this package's cache, else torchvision's download into
the cache. Each file is checked against the published md5. Debian recompresses the archives, so a
`.gz` whose own md5 differs is accepted when its decompressed content matches the published md5 of
the raw file; an uncompressed file is checked the same way.

The 60,000 training images are split once, with a fixed seed that does not depend on the run's seed,
into 50,000 for training and 10,000 for validation, so every run of a sweep is judged on the same
validation set. The 10,000 official test images are only ever measured.

The whole set is a few hundred MB as float32 at most, so it lives on the run's device as two
tensors per split; an epoch is a seeded permutation and contiguous slices of it. There is no
per-sample DataLoader path: that path costs more than the small network it feeds.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# name: (md5 of the published .gz archive, md5 of its decompressed content)
CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
VAL_SIZE = 10_000
SPLIT_SEED = 20_170_828  # Fashion-MNIST's release date; any fixed value would do
FIX = "install Debian's dataset-fashion-mnist, or pass --data-dir DIR holding the four FashionMNIST IDX files"


class DataError(RuntimeError):
    """Data that cannot be used; the message names the path and the fix."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fcn-sweep" / "fashion-mnist"


def _find_in_one(directory: Path, name: str) -> Path | None:
    return next((p for p in (directory / f"{name}.gz", directory / name) if p.is_file()), None)


def _find_in(directory: Path) -> dict[str, Path] | None:
    found = {name: _find_in_one(directory, name) for name in CHECKSUMS}
    return found if all(found.values()) else None  # type: ignore[return-value]


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def read_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file, checked against its published md5."""
    name = path.name.removesuffix(".gz")
    gz_md5, raw_md5 = CHECKSUMS[name]
    blob = path.read_bytes()
    try:
        raw = gzip.decompress(blob) if path.suffix == ".gz" else blob
    except (OSError, EOFError, zlib.error):  # zlib.error: a flipped byte inside the deflate stream
        raise DataError(f"{path} is not a readable gzip file; delete it and {FIX}") from None
    if _md5(blob) != gz_md5 and _md5(raw) != raw_md5:
        raise DataError(f"{path} does not match the published FashionMNIST md5 (corrupt or another dataset); {FIX}")
    return raw


def parse_idx(raw: bytes) -> np.ndarray:
    """IDX format: zero, zero, dtype code 0x08 (uint8), ndim, then ndim big-endian uint32 sizes."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError("not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"IDX body holds {body.size} bytes, header says {tuple(dims)}")
    return body.reshape(tuple(dims))


def _download() -> Path:
    """torchvision's download, for machines without Debian's package; lands in the cache dir."""
    from torchvision.datasets import FashionMNIST

    root = cache_dir()
    try:
        FashionMNIST(root=str(root), train=True, download=True)
        FashionMNIST(root=str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DataError(f"FashionMNIST is not on this machine and the download failed ({e}); {FIX}") from None
    return root / "FashionMNIST" / "raw"


def locate(data_dir: str | Path | None = None, download: bool = True) -> dict[str, Path]:
    """Paths of the four IDX files. An explicit directory must hold them: no silent fallback."""
    explicit = data_dir or os.environ.get("FCN_SWEEP_DATA")
    if explicit:
        found = _find_in(Path(explicit))
        if found is None:
            missing = [n for n in CHECKSUMS if _find_in_one(Path(explicit), n) is None]
            raise DataError(f"{explicit} lacks {', '.join(missing)} (.gz or raw); {FIX}")
        return found
    for directory in (DEBIAN_DIR, cache_dir(), cache_dir() / "FashionMNIST" / "raw"):
        found = _find_in(directory)
        if found:
            return found
    if not download:
        raise DataError(f"FashionMNIST is not in {DEBIAN_DIR} nor in {cache_dir()}; {FIX}")
    found = _find_in(_download())
    assert found is not None, "torchvision reported success but wrote no IDX files"
    return found


@functools.lru_cache(maxsize=2)
def load_arrays(data_dir: str | None = None) -> dict[str, np.ndarray]:
    """uint8 images (N, 784) and int64 labels (N,) for `train` (all 60,000) and `test`.

    Cached: a sweep worker trains many configs in one process and reads the files once."""
    paths = locate(data_dir)
    arrays = {}
    for key, name in (
        ("train_x", "train-images-idx3-ubyte"),
        ("train_y", "train-labels-idx1-ubyte"),
        ("test_x", "t10k-images-idx3-ubyte"),
        ("test_y", "t10k-labels-idx1-ubyte"),
    ):
        try:
            a = parse_idx(read_bytes(paths[name]))
        except ValueError as e:
            raise DataError(f"{paths[name]}: {e}; {FIX}") from None
        arrays[key] = a.reshape(len(a), -1) if key.endswith("_x") else a.astype(np.int64)
    return arrays


def split_indices(n: int, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a fixed permutation, independent of any run's seed."""
    perm = np.random.default_rng(seed).permutation(n)
    return perm[val_size:], perm[:val_size]


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, 784) float32, normalised with the training split's mean and std
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    val: Split
    test: Split

    @property
    def device(self) -> torch.device:
        return self.train.x.device


def load(
    device: str | torch.device = "cpu", subset: int = 0, data_dir: str | None = None, val_size: int = VAL_SIZE
) -> FashionMNIST:
    a = load_arrays(str(data_dir) if data_dir else None)
    train_idx, val_idx = split_indices(len(a["train_y"]), val_size)
    if subset:
        if subset > len(train_idx):
            raise DataError(f"subset={subset} exceeds the {len(train_idx)} training images; use 0 for all")
        train_idx = train_idx[:subset]
    # Statistics of the training split only, so validation and test stay unseen.
    pixels = a["train_x"][train_idx].astype(np.float32) / 255.0
    mean, std = float(pixels.mean()), float(pixels.std())

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        xt = (torch.from_numpy(x.astype(np.float32) / 255.0) - mean) / std
        return Split(xt.to(device), torch.from_numpy(y).to(device))

    return FashionMNIST(
        train=to_split(a["train_x"][train_idx], a["train_y"][train_idx]),
        val=to_split(a["train_x"][val_idx], a["train_y"][val_idx]),
        test=to_split(a["test_x"], a["test_y"]),
    )


def batch_starts(n: int, batch_size: int) -> range:
    """Where each mini-batch of an epoch over n samples begins; a final batch of one sample is
    dropped because BatchNorm cannot train on it."""
    return range(0, n - 1 if n % batch_size == 1 else n, batch_size)


def batches(split: Split, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled mini-batches. The permutation is drawn on the CPU so the order is the
    same on every device."""
    n = len(split)
    perm = torch.randperm(n, generator=generator).to(split.x.device)
    for start in batch_starts(n, batch_size):
        idx = perm[start : start + batch_size]
        yield split.x.index_select(0, idx), split.y[idx]  # index_select: a quarter of the time of x[idx]
