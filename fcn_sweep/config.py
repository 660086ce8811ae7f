"""RunConfig: every hyperparameter of one training run, in one place, typed and validated once.

A config may arrive as `--key=value` strings (what `wandb agent` passes through `${args}`), as a
dict (`wandb.config`, a sweep proposal), or as a YAML/JSON file. All three go through
`RunConfig.from_dict`, which is strict: an unknown key, a value of the wrong type or one outside
its range raises `ConfigError` naming the key and what would be accepted. Later stages therefore
never re-check what they receive.

The allowed names for activations, inits, optimizers and schedules live here as plain tuples,
so that a bad value is rejected before torch is even imported; the lookup tables in model.py and
optim.py are keyed by exactly these names (a test holds them together).
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

ACTIVATIONS = ("relu", "tanh", "gelu", "leaky_relu")
INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "normal")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adamw")
SCHEDULES = ("constant", "cosine")
PRECISIONS = ("highest", "high")  # torch.set_float32_matmul_precision's names: fp32, TF32


class ConfigError(ValueError):
    """A config that cannot be used; the message is one line a user can act on."""


# --- value parsers: each takes what a YAML file, a dict or a command line may hold -------------

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():  # sweep engines may hand 30.0 for 30
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    raise ValueError


def _as_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError
    x = float(v.strip()) if isinstance(v, str) else float(v)
    if not math.isfinite(x):
        raise ValueError
    return x


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError


def _as_list(v: Any) -> list:
    """`1024,256`, `[1024, 256]`, `1024 256`, a YAML list or a single number."""
    if isinstance(v, str):
        text = v.strip()
        v = ast.literal_eval(text) if text.startswith(("[", "(")) else text.replace(",", " ").split()
    if isinstance(v, (list, tuple)):
        return list(v)
    return [v]


def _widths(v: Any) -> tuple[int, ...]:
    out = tuple(_as_int(x) for x in _as_list(v))
    if not out or any(w < 1 for w in out):
        raise ValueError
    return out


def _dropout(v: Any) -> float | tuple[float, ...]:
    per_layer = isinstance(v, (list, tuple)) or (isinstance(v, str) and ("," in v or v.strip().startswith("[")))
    rates = tuple(_as_float(x) for x in _as_list(v)) if per_layer else (_as_float(v),)
    if not rates or any(not 0.0 <= r < 1.0 for r in rates):
        raise ValueError
    return rates if per_layer else rates[0]


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(v: Any) -> str:
        if not isinstance(v, str) or v.strip().lower() not in options:
            raise ValueError
        return v.strip().lower()

    return parse


def _bounded(parse: Callable[[Any], Any], ok: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        x = parse(v)
        if not ok(x):
            raise ValueError
        return x

    return check


def knob(default: Any, parse: Callable[[Any], Any], accepts: str, help: str) -> Any:
    """A config field that knows how to parse itself and how to describe what it accepts."""
    return field(default=default, metadata={"parse": parse, "accepts": accepts, "help": help})


_positive_int = _bounded(_as_int, lambda x: x >= 1)
_nonneg_int = _bounded(_as_int, lambda x: x >= 0)
_positive_float = _bounded(_as_float, lambda x: x > 0)
_nonneg_float = _bounded(_as_float, lambda x: x >= 0)
_unit_interval = _bounded(_as_float, lambda x: 0 <= x < 1)


@dataclass(frozen=True)
class RunConfig:
    # How long and on what.
    epochs: int = knob(20, _positive_int, "a positive integer", "passes over the 50,000 training images")
    batch_size: int = knob(64, _positive_int, "a positive integer", "training mini-batch size")
    subset: int = knob(
        0, _nonneg_int, "an integer >= 0", "train on the first N training images only (0 = all); for smoke tests"
    )
    seed: int = knob(0, _nonneg_int, "an integer >= 0", "seeds init, dropout and the shuffle order")

    # The network: Linear -> (BatchNorm1d) -> activation -> Dropout per hidden layer, then Linear(10).
    hidden: tuple[int, ...] = knob(
        (1024, 256), _widths, "one or more positive widths such as 1024,256 or [1024, 256]", "hidden layer widths"
    )
    activation: str = knob("relu", _choice(ACTIVATIONS), f"one of {', '.join(ACTIVATIONS)}", "hidden activation")
    batch_norm: bool = knob(
        False, _as_bool, "true or false (yes/no, on/off, 1/0)", "BatchNorm1d after each hidden Linear"
    )
    dropout: float | tuple[float, ...] = knob(
        0.0, _dropout, "a rate in [0, 1) or a list with one rate per hidden layer", "dropout after each activation"
    )
    init: str = knob("default", _choice(INITS), f"one of {', '.join(INITS)}", "weight init of every Linear")
    init_std: float = knob(1.0, _positive_float, "a number > 0", "standard deviation of init=normal")

    # The optimizer. `momentum` is SGD's momentum, Adam/AdamW's beta1 and RMSprop's momentum.
    optimizer: str = knob("adam", _choice(OPTIMIZERS), f"one of {', '.join(OPTIMIZERS)}", "optimizer")
    lr: float = knob(1.0e-3, _positive_float, "a number > 0", "learning rate")
    momentum: float = knob(0.9, _unit_interval, "a number in [0, 1)", "SGD/RMSprop momentum, Adam beta1")
    weight_decay: float = knob(0.0, _nonneg_float, "a number >= 0", "L2 penalty (decoupled for adamw)")
    schedule: str = knob("constant", _choice(SCHEDULES), f"one of {', '.join(SCHEDULES)}", "lr schedule over epochs")
    label_smoothing: float = knob(0.0, _unit_interval, "a number in [0, 1)", "cross-entropy label smoothing")

    # Numerics. fp32 unless asked: the study's numbers and bit-for-bit repeats are fp32's.
    matmul_precision: str = knob(
        "highest", _choice(PRECISIONS), f"one of {', '.join(PRECISIONS)}", "fp32 matrix products: highest, high (TF32)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.dropout, tuple) and len(self.dropout) != len(self.hidden):
            raise ConfigError(
                f"dropout: got {len(self.dropout)} rates for {len(self.hidden)} hidden layers; "
                f"give one rate, or one per layer"
            )

    # --- derived, never swept: scalar companions for parallel-coordinates axes -----------------
    @property
    def depth(self) -> int:
        return len(self.hidden)

    @property
    def arch(self) -> str:
        return "-".join(str(w) for w in self.hidden)

    def dropout_rates(self) -> tuple[float, ...]:
        return self.dropout if isinstance(self.dropout, tuple) else (self.dropout,) * self.depth

    # --- construction ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        parsed = {}
        known = {f.name: f for f in fields(cls)}
        for key, raw in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"unknown key '{key}'; known keys: {', '.join(known)}")
            meta = known[name].metadata
            try:
                parsed[name] = meta["parse"](raw)
            except (ValueError, TypeError, SyntaxError):
                raise ConfigError(f"{name}: expected {meta['accepts']}, got {raw!r}") from None
        return replace(base or cls(), **parsed)

    @classmethod
    def from_file(cls, path: str | Path, base: RunConfig | None = None) -> RunConfig:
        """A YAML or JSON mapping of keys to values; a run directory's config.json works as is."""
        p = Path(path)
        try:
            data = read_mapping(p / "config.json" if p.is_dir() else p, "config file", "keys to values")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return cls.from_dict(data, base)

    @classmethod
    def from_args(cls, argv: Iterable[str], base: RunConfig | None = None) -> RunConfig:
        return cls.from_dict(parse_overrides(argv), base)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists, exactly the values that were swept."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def describe(cls) -> list[tuple[str, Any, str, str]]:
        """(name, default, accepts, help) for every field: docs/config.md, the config reference."""
        return [
            (f.name, f.default if f.default is not MISSING else None, f.metadata["accepts"], f.metadata["help"])
            for f in fields(cls)
        ]


def read_mapping(path: Path, what: str, of: str) -> dict:
    """A YAML (or JSON) file holding a mapping; ValueError with one line naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {' '.join(str(e).split())}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping of {of}, not {type(data).__name__}")
    return data


def parse_overrides(argv: Iterable[str]) -> dict[str, str]:
    """`--key=value` (what `wandb agent` passes) or `--key value` pairs into a dict of strings."""
    out: dict[str, str] = {}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --key=value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(items) or items[i + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value: --{key}=VALUE")
            value = items[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def config_key(params: Mapping[str, Any]) -> str:
    """What makes runs one config: their values, all but the seed. Runs that differ only in their
    seed (seeds from `--repeats`, or `seed` swept as a parameter) are one config, with a spread over
    seeds, in `fcn-sweep status` and in the report alike."""
    return json.dumps({k: v for k, v in params.items() if k != "seed"}, sort_keys=True, default=str)
