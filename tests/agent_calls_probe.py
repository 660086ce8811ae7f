"""Every W&B agent call of tracking/wandb_agent_calls.py once, against the stand-in (tests/wandb_server.py)
at WANDB_BASE_URL, whose sweep is me/proj/abc123: in the test's process (the venv's wandb), or as
`python -m tests.agent_calls_probe` in a process whose PYTHONPATH starts with another wandb, which
prints the same answers as JSON. Imports only wandb and fcn_sweep, so that other wandb is the one used.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable

from fcn_sweep.tracking.wandb_agent_calls import AgentCalls, SweepNotFound, SweepPath

SWEEP = SweepPath("me", "proj", "abc123")
# One name of each set of agent calls: a wandb without both has neither (tracking/wandb_agent_calls.py).
CALL_SETS = (("wandb.apis.public.sweeps", "_register_agent"), ("wandb.apis", "InternalApi"))


def probe() -> dict:
    """The sweep's config, two agents registered, a run handed to the first (idle) and its next
    heartbeat (holding the run), and what an unknown sweep id gives."""
    import wandb

    calls = AgentCalls(SWEEP)
    config = calls.sweep_config()
    agents = [calls.register(f"probe-{i}") for i in range(2)]
    handed = calls.heartbeat(agents[0], [])
    held = calls.heartbeat(agents[0], [c["run_id"] for c in handed if c.get("type") == "run"])
    try:
        AgentCalls(SweepPath(SWEEP.entity, SWEEP.project, "nosuch")).sweep_config()
        not_found = None
    except SweepNotFound as e:
        not_found = str(e)
    return {"wandb": wandb.__version__, "wandb_file": wandb.__file__, "config": config, "agents": agents,
            "handed": handed, "held": held, "not_found": not_found}  # fmt: skip


def hide_agent_calls(remove: Callable[[object, str], None] = delattr) -> None:
    """This process's wandb, in memory only, as a release without either set of agent calls would be."""
    for module, name in CALL_SETS:
        owner = importlib.import_module(module)
        if hasattr(owner, name):
            remove(owner, name)


if __name__ == "__main__":
    print(json.dumps(probe()))
