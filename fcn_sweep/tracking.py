"""Where a run's events go: the run directory, the terminal, and (in one place) Weights & Biases.

A run directory holds `config.json`, `metrics.jsonl` (one object per epoch, appended as epochs
end, so a crash keeps what finished), `summary.json` (written last: its presence means the run
ended) and `model.safetensors` (the best-validation weights with the config in their metadata).
Files that must not be read half-written are written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import platform
import secrets
import sys
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml

from .config import RunConfig
from .model import save_model
from .train import FitResult, Tracker


def new_run_id() -> str:
    """Sortable by start time, and unique even for thousands of ids made in one second (a grid's
    slots): 8 random base-36 characters, as W&B's own run ids."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return time.strftime("%Y%m%d-%H%M%S-") + "".join(secrets.choice(alphabet) for _ in range(8))


def jsonable(value: Any) -> Any:
    """Strict JSON: NaN and infinities (a diverged run's loss) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


class Trackers(Tracker):
    """Fans each event out to several trackers, in order."""

    def __init__(self, trackers: Iterable[Tracker]):
        self.trackers = list(trackers)

    def start(self, cfg: RunConfig, info: dict) -> None:
        for t in self.trackers:
            t.start(cfg, info)

    def log_epoch(self, metrics: dict[str, float]) -> None:
        for t in self.trackers:
            t.log_epoch(metrics)

    def finish(self, result: FitResult) -> None:
        for t in self.trackers:
            t.finish(result)


class Deferred(Tracker):
    """Hands another tracker's events to a background thread, in order, and returns at once.

    A sweep worker wraps its W&B runs in it: `wandb.init` and `finish` cost ~45 ms a run here,
    mostly waiting on the W&B service, which the next epoch or the next run can use instead. One
    executor thread serves all of a worker's runs, so each run's events keep their order and W&B
    is only ever called from that thread. `errors()` reports what failed; the worker drains the
    executor before it exits, so no run is left unfinished."""

    def __init__(self, tracker: Tracker, executor: ThreadPoolExecutor):
        self.tracker, self.executor = tracker, executor
        self.futures: list[Future] = []

    def start(self, cfg: RunConfig, info: dict) -> None:
        self.futures.append(self.executor.submit(self.tracker.start, cfg, info))

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.futures.append(self.executor.submit(self.tracker.log_epoch, dict(metrics)))

    def finish(self, result: FitResult) -> None:
        self.futures.append(self.executor.submit(self.tracker.finish, result))

    def errors(self) -> list[BaseException]:
        """Exceptions of the events done so far; the events still queued are not waited for."""
        return [e for f in self.futures if f.done() and (e := f.exception()) is not None]


class RunDir(Tracker):
    def __init__(self, out: str | Path, run_id: str | None = None):
        self.run_id = run_id or new_run_id()
        self.path = Path(out) / self.run_id
        self.info: dict = {}
        self._t0 = 0.0

    def start(self, cfg: RunConfig, info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=False)
        self.info = info
        self._t0 = time.time()
        write_json(self.path / "config.json", cfg.to_dict())
        (self.path / "metrics.jsonl").touch()

    def log_epoch(self, metrics: dict[str, float]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(jsonable(metrics), allow_nan=False) + "\n")

    def finish(self, result: FitResult) -> None:
        if result.best_state is not None:
            save_model(
                self.path / "model.safetensors",
                result.best_state,
                result.cfg,
                extra={"epoch": result.best_epoch, "val_acc": result.best.get("val/acc")},
            )
        write_json(
            self.path / "summary.json",
            {
                "run_id": self.run_id,
                **result.summary(),
                **self.info,
                "wall_s": round(time.time() - self._t0, 3),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        )


class Progress(Tracker):
    """A bar over epochs on stderr with the latest loss and accuracies."""

    def __init__(self, label: str = "", enabled: bool = True):
        self.label, self.enabled, self.bar = label, enabled, None

    def start(self, cfg: RunConfig, info: dict) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=cfg.epochs, desc=self.label or cfg.arch, unit="epoch", file=sys.stderr, dynamic_ncols=True
            )

    def log_epoch(self, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                {
                    "loss": f"{metrics['train/loss']:.4f}",
                    "train": f"{metrics['train/acc']:.4f}",
                    "val": f"{metrics['val/acc']:.4f}",
                },
                refresh=False,
            )
            self.bar.update(1)

    def finish(self, result: FitResult) -> None:
        if self.bar is not None:
            self.bar.close()


# --- Weights & Biases: the only code in the package that imports wandb -------------------------

DEFAULT_PROJECT = "fcn-sweep"


def wandb_logged_in() -> bool:
    """Whether W&B credentials exist on this machine, checked without the network or a prompt:
    the variables W&B reads, else a ~/.netrc entry for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(flag: str) -> tuple[str, str | None]:
    """(mode, a note for the user or None). `auto` defers to WANDB_MODE, else online when logged in,
    else offline: a run never fails or waits for want of an account."""
    if flag != "auto":
        return flag, None
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled", "run", "dryrun"):
        return {"run": "online", "dryrun": "offline"}.get(env, env), None
    if wandb_logged_in():
        return "online", None
    return "offline", "not logged in to W&B"


def sweep_params() -> dict[str, Any]:
    """The parameters `wandb agent` wrote for this run (WANDB_SWEEP_PARAM_PATH), as key -> value.

    The agent also passes them as `${args}`; reading the file too lets a sweep `command:` without
    `${args}` work, as W&B's own `wandb.config` does."""
    path = os.environ.get("WANDB_SWEEP_PARAM_PATH")
    if not path or not Path(path).is_file():
        return {}
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return {
        k: v["value"] if isinstance(v, dict) and "value" in v else v
        for k, v in raw.items()
        if k != "wandb_version" and not k.startswith("_")
    }


def flat_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as swept (lists stay lists, so W&B's locked sweep values match), plus scalar
    companions under other names, because a list makes a poor parallel-coordinates axis."""
    out = cfg.to_dict()
    out.update(depth=cfg.depth, arch=cfg.arch)
    for i, (width, rate) in enumerate(zip(cfg.hidden, cfg.dropout_rates(), strict=True), start=1):
        out[f"width_{i}"] = width
        out[f"dropout_{i}"] = rate
    return out


def warm_up_wandb() -> None:
    """Do what a process's first `wandb.init` does once: import the client and its launch and
    public-API modules and start the W&B service (~2 s here), so a sweep worker pays it before its
    first run rather than inside it."""
    import wandb
    import wandb.sdk.launch

    wandb.setup()  # starts the W&B service process that every run of this process talks to


class WandbRun(Tracker):
    """A W&B run beside the run directory: per-epoch metrics stepped by `epoch`, a summary, and the
    best model as an artifact. Its files live in `<run dir>/wandb/`, so an offline run is synced
    later with `wandb sync <run dir>/wandb/offline-run-*`.

    `requirements=False` skips W&B's list of installed packages (requirements.txt): building it
    scans every package's metadata, ~80 ms a run here, the largest part of `wandb.init`. Sweep
    workers skip it, since every run of a sweep shares one environment and the W&B run's metadata
    still records Python, and summary.json the torch version."""

    def __init__(
        self,
        rundir: RunDir,
        mode: str,
        project: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        tags: Iterable[str] = (),
        requirements: bool = True,
    ):
        self.rundir, self.mode, self.requirements = rundir, mode, requirements
        self.project, self.group, self.job_type, self.tags = project, group, job_type, list(tags)
        self.run = None

    def start(self, cfg: RunConfig, info: dict) -> None:
        import wandb

        in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
        self.run = wandb.init(
            project=self.project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            # Under `wandb agent` the sweep assigns the id (WANDB_RUN_ID); elsewhere the run
            # directory's id is used, so a W&B run and its directory share one name.
            id=None if in_sweep else self.rundir.run_id,
            dir=str(self.rundir.path),
            config=flat_config(cfg),
            mode=self.mode,
            group=self.group,
            job_type=self.job_type,
            tags=self.tags or None,
            # Several runs live at once in a packed sweep worker; "create_new" keeps them apart.
            reinit="create_new",
            settings=wandb.Settings(
                silent=self.mode != "online",
                console="off",
                x_disable_stats=True,
                x_save_requirements=self.requirements,
            ),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.run.define_metric("val/acc", step_metric="epoch", summary="max")
        self.run.summary.update({"params": info.get("params"), "device": info.get("device")})

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.run.log(jsonable(metrics))

    def finish(self, result: FitResult) -> None:
        import wandb

        summary = jsonable(result.summary())
        self.run.summary.update(summary)
        model = self.rundir.path / "model.safetensors"
        if model.exists():
            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={**summary, **self.rundir.info})
            artifact.add_file(str(model))
            artifact.add_file(str(self.rundir.path / "config.json"))
            self.run.log_artifact(artifact, aliases=["best", "latest"])
        self.run.finish(exit_code=0)

    @property
    def sync_dir(self) -> str | None:
        return self.run.settings.sync_dir if self.run is not None and self.mode == "offline" else None
