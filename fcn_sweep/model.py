"""The FCN, built in a loop over the hidden widths; weight inits as a lookup table; save and load.

A saved model is one safetensors file whose metadata holds the RunConfig as JSON, so the file
alone rebuilds the network (`load_model`).

A Linear that feeds batch norm has no bias: the normalisation subtracts the batch mean, which
cancels any bias, so its gradient is zero but for rounding noise, which adaptive optimizers (Adam,
RMSprop) divide by its own size and turn into steps of about lr: noise in the running mean, and a
run no longer equal to itself on another device or in a pack. Files written while that bias
existed still load: it folds exactly into the norm's running mean (`load_model`).

Training does not run this nn.Sequential (packed.py trains every run, with kernels.py's layers and
rng.py's dropout masks); it is the network a user loads, evaluates and builds on.
"""

from __future__ import annotations

import itertools
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


_LEVELS = 1 << 16  # a mask draw is a uniform 16-bit integer (rng.py)


def dropout_threshold(p: float) -> tuple[int, float]:
    """(int16 threshold, scale of kept units) for rate p: a unit is kept when its draw is >= the
    threshold, so the rate is p rounded to a multiple of 2**-16 (0.3 becomes 0.300003), and kept
    units are scaled by 1/(1 - that rate), so the layer stays unbiased."""
    dropped = round(p * _LEVELS)
    return dropped - _LEVELS // 2, _LEVELS / (_LEVELS - dropped)


def keep_mask(bits: torch.Tensor, threshold: int | torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """`scale` where `bits` clears `threshold`, else 0, as float32. Compared straight into a float
    tensor: a bool mask and its conversion cost three times as much (torch 2.14, CPU)."""
    return torch.ge(bits, threshold, out=torch.empty(bits.shape, device=bits.device)).mul_(scale)


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
    for m in model:
        if isinstance(m, nn.Linear) and init is not None:
            init(m.weight, cfg)
            nn.init.zeros_(m.bias)
    for linear in _linears_into_norms(model):
        # Drawn above and dropped here, so that a seed's initial weights are what they were when
        # this Linear had a bias (the default init draws it from the same stream).
        linear.register_parameter("bias", None)
    return model


def _linears_into_norms(model: nn.Sequential) -> list[nn.Linear]:
    return [
        m for m, after in itertools.pairwise(model) if isinstance(m, nn.Linear) and isinstance(after, nn.BatchNorm1d)
    ]


def fold_norm_biases(model: nn.Sequential, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict written when a Linear before batch norm had a bias, as one without: batch norm
    sees z + b against its running mean m, which is z against m - b, in training and evaluation."""
    state, into_norms = dict(state), _linears_into_norms(model)
    for (name, m), (norm, _) in itertools.pairwise(model.named_children()):
        if m in into_norms and f"{name}.bias" in state:
            state[f"{norm}.running_mean"] = state[f"{norm}.running_mean"] - state.pop(f"{name}.bias")
    return state


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
    model.load_state_dict(fold_norm_biases(model, load_file(str(path))))
    return model.eval(), cfg
