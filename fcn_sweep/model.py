"""The FCN, built in a loop over the hidden widths; weight inits as a lookup table; save and load.

A saved model is one safetensors file whose metadata holds the RunConfig as JSON, so the file
alone rebuilds the network (`load_model`).
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


def build_fcn(cfg: RunConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width_in = IN_FEATURES
    for width, rate in zip(cfg.hidden, cfg.dropout_rates(), strict=True):
        layers.append(nn.Linear(width_in, width))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(ACTIVATIONS[cfg.activation]())
        if rate > 0:
            layers.append(nn.Dropout(rate))
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
