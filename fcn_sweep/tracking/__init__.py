"""Where a run's events go, one destination per module; W&B is imported in the two wandb_*.py alone.

tracker.py     the `Tracker` protocol and `Trackers` (fan-out)
records.py     run ids and strict JSON
run_dir.py     `RunDirTracker`: config.json, metrics.jsonl, summary.json, model.safetensors
progress.py    `ProgressTracker`: a bar over epochs on stderr
background.py  `BackgroundTracker`: another tracker's events on a background thread
write_guard.py `WriteGuardTracker`: a failed write ends the run crashed, not with a traceback
wandb_tracker.py  W&B credentials, mode, sweep parameters, warm-up, and `WandbTracker`
wandb_agent_calls.py  W&B's agent calls (sweep config, CreateAgent, Heartbeat), not public API: wrapped here
"""

from .background import BackgroundTracker
from .progress import ProgressTracker
from .records import jsonable, new_run_id, write_json
from .run_dir import RunDirTracker
from .tracker import Tracker, Trackers
from .wandb_tracker import (
    DEFAULT_PROJECT,
    SweepMember,
    WandbTracker,
    flat_config,
    resolve_wandb_mode,
    service_gone,
    sweep_params,
    teardown_wandb,
    wandb_logged_in,
    warm_up_wandb,
)
from .write_guard import WriteGuardTracker

__all__ = [
    "DEFAULT_PROJECT",
    "BackgroundTracker",
    "ProgressTracker",
    "RunDirTracker",
    "SweepMember",
    "Tracker",
    "Trackers",
    "WandbTracker",
    "WriteGuardTracker",
    "flat_config",
    "jsonable",
    "new_run_id",
    "resolve_wandb_mode",
    "service_gone",
    "sweep_params",
    "teardown_wandb",
    "wandb_logged_in",
    "warm_up_wandb",
    "write_json",
]
