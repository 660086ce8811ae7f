"""The FCN, built in a loop over the hidden widths; weight inits as a lookup table; save and load.

A saved model is one safetensors file whose metadata holds the RunConfig as JSON, so the file
alone rebuilds the network (`load_model`).

Dropout draws its masks from a generator the run owns rather than from torch's global one, for two
reasons. Reproducibility across paths: a model trained alone and the same config trained inside a
pack of K models (packed.py) must draw the very same masks, which a shared global stream cannot
give. Speed: `nn.Dropout` calls `bernoulli_`, which on the CPU costs about as much as a third of the
step's matrix multiplies at batch 64 (one Mersenne-twister draw and a float conversion per element).
Instead one 64-bit draw is cut into four 16-bit integers, and an element is kept when its integer
clears a threshold: the rate is `p` rounded to a multiple of 2**-16 (0.3 becomes 0.300003) and kept
units are scaled by 1/(1 - that rate), so the layer stays unbiased. The same code runs on CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .config import RunConfig

IN_FEATURES = 28 * 28
N_CLASSES = 10

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}

# The gain the Kaiming inits assume follows the activation that consumes the layer's output.
_KAIMING_NONLINEARITY = {"relu": "relu", "gelu": "relu", "leaky_relu": "leaky_relu", "tanh": "tanh"}

# name -> fn(weight, cfg); None keeps PyTorch's own default (Kaiming-uniform with a=sqrt(5), and its bias).
INITS: dict[str, Callable[[torch.Tensor, RunConfig], object] | None] = {
    "default": None,
    "xavier_uniform": lambda w, cfg: nn.init.xavier_uniform_(w),
    "xavier_normal": lambda w, cfg: nn.init.xavier_normal_(w),
    "kaiming_uniform": lambda w, cfg: nn.init.kaiming_uniform_(w, nonlinearity=_KAIMING_NONLINEARITY[cfg.activation]),
    "kaiming_normal": lambda w, cfg: nn.init.kaiming_normal_(w, nonlinearity=_KAIMING_NONLINEARITY[cfg.activation]),
    "normal": lambda w, cfg: nn.init.normal_(w, 0.0, cfg.init_std),
}


_LEVELS = 1 << 16  # a mask draw is a uniform 16-bit integer


def dropout_threshold(p: float) -> tuple[int, float]:
    """(int16 threshold, scale of kept units) for rate p: kept when the draw is >= the threshold."""
    dropped = round(p * _LEVELS)
    return dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


def random_int16(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """n uniform int16 values, drawn four at a time from full-range 64-bit integers."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    return words.random_(-(1 << 63), None, generator=generator).view(torch.int16)[:n]


class Dropout(nn.Dropout):
    """nn.Dropout whose masks come from `generator` (see the module docstring); None: torch's global one."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        threshold, scale = dropout_threshold(self.p)
        bits = random_int16(x.numel(), x.device, self.generator).view(x.shape)
        return x * keep_mask(bits, threshold, scale, x)


def keep_mask(bits: torch.Tensor, threshold: int | torch.Tensor, scale: float | torch.Tensor, like: torch.Tensor):
    """`scale` where `bits` clears `threshold`, else 0, in `like`'s dtype. Compared straight into a
    float tensor: a bool mask and its conversion cost three times as much (torch 2.14, CPU)."""
    return torch.ge(bits, threshold, out=torch.empty(bits.shape, dtype=like.dtype, device=like.device)).mul_(scale)


def use_generator(model: nn.Module, generator: torch.Generator | None) -> nn.Module:
    """Make every Dropout of `model` draw from `generator`, in layer order, as a run does."""
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator
    return model


def build_fcn(cfg: RunConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width_in = IN_FEATURES
    for width, rate in zip(cfg.hidden, cfg.dropout_rates(), strict=True):
        layers.append(nn.Linear(width_in, width))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[cfg.activation]())
        if rate > 0:
            layers.append(Dropout(rate))
        width_in = width
    layers.append(nn.Linear(width_in, N_CLASSES))
    model = nn.Sequential(*layers)

    init = INITS[cfg.init]
    if init is not None:
        for m in model:
            if isinstance(m, nn.Linear):
                init(m.weight, cfg)
                nn.init.zeros_(m.bias)
    return model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_model(path: Path, state: dict[str, torch.Tensor], cfg: RunConfig, extra: dict | None = None) -> None:
    """Atomic: a reader never sees half a file."""
    meta = {"config": json.dumps(cfg.to_dict()), **{k: json.dumps(v) for k, v in (extra or {}).items()}}
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_model(path: str | Path) -> tuple[nn.Sequential, RunConfig]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" not in meta:
        raise ValueError(f"{path} holds no fcn-sweep config; it was not written by fcn-sweep")
    cfg = RunConfig.from_dict(json.loads(meta["config"]))
    model = build_fcn(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), cfg
