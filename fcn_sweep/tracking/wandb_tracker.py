"""Weights & Biases: credentials, mode, the sweep's parameter file, warm-up, and `WandbTracker`.

The only module of the package that imports wandb, and only inside the functions that need it, so
that a run without W&B never pays for its import.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import yaml

from ..config import RunConfig
from .records import jsonable
from .run_dir import RunDirTracker
from .tracker import Tracker
from .wandb_agent_calls import SweepPath

if TYPE_CHECKING:
    from ..results import FitResult


DEFAULT_PROJECT = "fcn-sweep"


@dataclass(frozen=True)
class SweepMember:
    """A run of a W&B sweep that a packed agent (`fcn-sweep wandb-agent --pack`) trains in its own
    process beside others: it joins the sweep through its settings, not the environment (with
    WANDB_SWEEP_ID set, wandb drops the `id=` of every run and the members would share one), and a
    stop of this run from W&B (the web app's stop button) calls `on_stop` instead of interrupting
    the process's main thread, which would stop the whole pack. wandb before 0.28 has no such hook:
    there a stop from the web app stops the pack, as Ctrl-C does."""

    path: SweepPath
    on_stop: Callable[[], None]

    def settings(self, settings_class: type) -> dict[str, Any]:
        extra: dict[str, Any] = {"sweep_id": self.path.sweep_id}
        fields = getattr(settings_class, "model_fields", {})
        if "stop_fn" in fields:
            extra["stop_fn"] = self.on_stop
        return extra


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
    public-API modules and start the W&B service, so a sweep worker pays it before its first
    run rather than inside it."""
    import wandb
    import wandb.sdk.launch

    wandb.setup()  # starts the W&B service process that every run of this process talks to


def service_gone(error: BaseException) -> bool:
    """Whether a W&B call failed because the W&B service process has ended: SLURM's scancel (and a
    time limit's kill) signals every process of a task, the service this process started included,
    which ends at once whatever the signal's disposition (it is a Go program)."""
    try:  # wandb's own errors for a service that went away: private names, which an older wandb may lack
        from wandb.sdk.mailbox import HandleAbandonedError, MailboxClosedError
    except ImportError:
        return isinstance(error, ConnectionError)
    return isinstance(error, ConnectionError | MailboxClosedError | HandleAbandonedError)


def teardown_wandb() -> None:
    """Stop the W&B service this process started, now rather than in wandb's atexit hook, which
    prints a traceback when the service has gone already (see `service_gone`)."""
    import sys

    if "wandb" not in sys.modules:
        return  # nothing of W&B was started
    import wandb

    try:
        wandb.teardown()  # unregisters wandb's atexit hook before it talks to the service
    except Exception as e:
        if not service_gone(e):
            raise  # the service ended first, so nothing is left to stop; anything else is news


class WandbTracker(Tracker):
    """A W&B run beside the run directory: per-epoch metrics stepped by `epoch`, a summary, and the
    best model as an artifact. Its files live in `<run dir>/wandb/`, so an offline run is synced
    later with `wandb sync <run dir>/wandb/offline-run-*`.

    `requirements=False` skips W&B's list of installed packages (requirements.txt) and code saving:
    building the list scans every package's metadata, the largest part of `wandb.init`. Sweep
    workers skip it, and so does a run under `wandb agent`, since every run of a sweep shares one
    environment and the W&B run's metadata still records Python, and summary.json the torch version.

    The summary's `val/acc` is the best epoch's value, a plain number: W&B's sweep controller reads
    the summary's `val/acc` as the run's objective (with its history), and `define_metric(summary=
    "max")` would store `{"max": ...}` there instead, which no number-reading code can use."""

    def __init__(
        self,
        rundir: RunDirTracker,
        mode: str,
        project: str | None = None,
        group: str | None = None,
        job_type: str = "train",
        tags: Iterable[str] = (),
        requirements: bool = True,
        sweep: SweepMember | None = None,
    ):
        self.rundir, self.mode, self.requirements, self.sweep = rundir, mode, requirements, sweep
        self.project, self.group, self.job_type, self.tags = project, group, job_type, list(tags)
        self.run = None

    def start(self, cfg: RunConfig, info: dict) -> None:
        import wandb

        in_sweep = bool(os.environ.get("WANDB_SWEEP_ID"))
        lean = in_sweep or self.sweep is not None or not self.requirements
        member = self.sweep.settings(wandb.Settings) if self.sweep is not None else {}
        project = self.sweep.path.project if self.sweep is not None else self.project
        self.run = wandb.init(
            # A sweep's runs belong to the sweep's project: W&B ignores (and warns about) any other.
            project=None if in_sweep else project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
            entity=self.sweep.path.entity if self.sweep is not None else None,
            # Under `wandb agent` the sweep assigns the id (WANDB_RUN_ID); elsewhere the run
            # directory's id is used, so a W&B run and its directory share one name (a packed
            # agent's member: the id the sweep's server gave it, which names its directory too).
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
                x_save_requirements=not lean,
                save_code=False if lean else None,  # None: W&B's own default
                **member,
            ),
        )
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.run.summary.update({"params": info.get("params"), "device": info.get("device")})

    def log_epoch(self, metrics: dict[str, float]) -> None:
        self.run.log(jsonable(metrics))

    def finish(self, result: FitResult) -> None:
        import wandb

        summary = jsonable(result.summary())
        # The objective in the summary is the best epoch's (see the class's docstring); until now
        # it was the latest epoch's, W&B's default.
        best = {} if summary["best_val_acc"] is None else {"val/acc": summary["best_val_acc"]}
        self.run.summary.update({**summary, **best})
        model = self.rundir.path / "model.safetensors"
        if model.exists():
            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={**summary, **self.rundir.info})
            artifact.add_file(str(model))
            artifact.add_file(str(self.rundir.path / "config.json"))
            self.run.log_artifact(artifact, aliases=["best", "latest"])
        self.run.finish(exit_code=1 if result.status == "crashed" else 0)

    @property
    def sync_dir(self) -> str | None:
        return self.run.settings.sync_dir if self.run is not None and self.mode == "offline" else None
