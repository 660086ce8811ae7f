"""The three calls a W&B sweep agent makes to W&B's server, wrapped in one place because none is public
API: the sweep's config (`SweepWithRuns`), registering an agent (`CreateAgent`), and the heartbeat
that reports an agent's runs and brings back its commands (`run`, `stop`, `exit`).

wandb 0.29 and later keep them as functions in `wandb.apis.public.sweeps`; older releases as methods
of `wandb.apis.InternalApi`. Whichever this wandb has is used; if it has neither, or a call's shape
changed, `AgentCallsChanged` says so in one line naming the wandb version. This module and
wandb_tracker.py are the package's only wandb imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

# The wandb releases these calls were tested with: pyproject.toml's floor (tests/test_wandb_oldest.py
# holds the two equal) and the newest the tests ran on.
TESTED = ("0.19.10", "0.31")


class AgentCallsChanged(RuntimeError):
    """This wandb's agent calls are not the ones this package was written against."""


class SweepNotFound(ValueError):
    pass


class ServerRefused(ValueError):
    """W&B's server could not be reached, or refused the credentials, when the agent started."""


@dataclass(frozen=True)
class SweepPath:
    entity: str
    project: str
    sweep_id: str

    @classmethod
    def parse(cls, text: str) -> SweepPath:
        parts = text.strip().split("/")
        if len(parts) != 3 or not all(parts) or any(" " in p for p in parts):
            raise ValueError(f"the sweep must be ENTITY/PROJECT/SWEEP_ID as `wandb sweep` prints it, got {text!r}")
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.sweep_id}"


def wandb_version() -> str:
    import wandb

    return wandb.__version__


class AgentCalls:
    """W&B's agent calls for one sweep, made with this wandb's own client code."""

    def __init__(self, path: SweepPath):
        import wandb

        self.path = path
        try:  # wandb.Api() checks the credentials with the server
            self._config, self._register, self._beat = self._bind()
        except wandb.errors.Error as e:
            raise ServerRefused(self.refused(e)) from None

    @staticmethod
    def refused(error: Exception) -> str:
        import os

        url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
        return (f"W&B's server at {url} did not accept the agent ({type(error).__name__}: {error}); check the "
                "network, WANDB_BASE_URL and the key (`wandb login`)")  # fmt: skip

    def _bind(self) -> tuple[Callable, Callable, Callable]:
        import wandb

        p = self.path
        try:
            from wandb.apis.public.sweeps import _agent_heartbeat, _register_agent, _sweep_with_runs
        except ImportError:
            pass
        else:
            api = wandb.Api(overrides={"entity": p.entity, "project": p.project})
            return (
                lambda: _sweep_with_runs(api, p.sweep_id, "{}", project=p.project, entity=p.entity),
                lambda host: _register_agent(api, host, sweep_id=p.sweep_id, project=p.project, entity=p.entity),
                lambda agent_id, states: _agent_heartbeat(api, agent_id, {}, states),
            )
        try:
            from wandb.apis import InternalApi
        except ImportError:
            raise self.changed("neither wandb.apis.public.sweeps._register_agent nor InternalApi") from None
        missing = [name for name in ("sweep", "register_agent", "agent_heartbeat") if not hasattr(InternalApi, name)]
        if missing:
            raise self.changed(f"InternalApi has no {', '.join(missing)}")
        api = InternalApi({"entity": p.entity, "project": p.project})
        return (
            lambda: api.sweep(p.sweep_id, "{}", project=p.project, entity=p.entity),
            lambda host: api.register_agent(host, sweep_id=p.sweep_id, project_name=p.project, entity=p.entity),
            lambda agent_id, states: api.agent_heartbeat(agent_id, {}, states),
        )

    def changed(self, what: str) -> AgentCallsChanged:
        return AgentCallsChanged(
            f"wandb {wandb_version()} changed W&B's agent calls ({what}); fcn-sweep wandb-agent --pack was tested "
            f"with wandb {' and '.join(TESTED)}; --pack 1 (W&B's own agent) still works"
        )

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (TypeError, AttributeError, KeyError) as e:  # a signature or a response's shape changed
            raise self.changed(f"{what}: {type(e).__name__}: {e}") from None

    def sweep_config(self) -> dict:
        """The sweep's config as W&B holds it; SweepNotFound for a sweep the server does not know."""

        def fetch() -> dict:
            try:
                sweep = self._config()
            except Exception as e:
                # W&B's client raises ValueError("Sweep ENTITY/PROJECT/ID not found") for a project or
                # sweep the server answers null for, and its `normalize_exceptions` re-raises that as
                # a CommError holding the ValueError in `exc` (so do 0.19.10 and 0.31).
                if isinstance(e, ValueError) or isinstance(getattr(e, "exc", None), ValueError):
                    raise SweepNotFound(f"no sweep {self.path} on W&B's server") from None
                if isinstance(e, TypeError | AttributeError | KeyError):
                    raise  # the call's shape: _call says so
                raise ServerRefused(self.refused(e)) from None
            return yaml.safe_load(sweep["config"]) or {}

        return self._call("SweepWithRuns", fetch)

    def register(self, host: str) -> str:
        """A new agent of the sweep, named `host`; its id."""
        return str(self._call("CreateAgent", lambda: self._register(host))["id"])

    def heartbeat(self, agent_id: str, running: list[str]) -> list[dict]:
        """Report an agent's runs (an empty list: the agent is idle and may be handed one); the
        server's commands for it. A failed call is an empty answer (W&B's client logs it), so a
        server that is away for a while only delays the commands."""

        def beat() -> list[dict]:
            try:
                return self._beat(agent_id, {r: True for r in running})
            except Exception as e:  # wandb's SweepNotFoundError (a 404: the sweep was deleted), where it has one
                if type(e).__name__ == "SweepNotFoundError":
                    raise SweepNotFound(f"sweep {self.path} was deleted on W&B's server") from None
                raise

        commands = self._call("Heartbeat", beat)
        if not isinstance(commands, list):
            raise self.changed(f"Heartbeat answered {type(commands).__name__}, not a list of commands")
        return commands
