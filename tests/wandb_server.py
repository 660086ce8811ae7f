"""A local stand-in for the part of W&B's server that sweep agents talk to, on loopback.

W&B's own client runs unmodified against it (`WANDB_BASE_URL`); only the agent's GraphQL calls are
answered, with the shapes W&B's client reads (`wandb/apis/public/sweeps.py`): `SweepWithRuns` (the
sweep's config; no sweep for an unknown id, as the server answers), `CreateAgent`, and `Heartbeat`,
which hands an idle agent (empty run-state map) one `run` command, sends `stop` for runs W&B's own
Hyperband (`sweeps.stop_runs`) stops, and queued `stop`/`exit` commands (a user's stop, a cancelled
sweep). Any other query gets an empty answer, as a server without that feature would.

Proposals are either a fixed list (`runs`) or W&B's own engine (`sweeps.next_runs` over the runs
handed out so far). The runs themselves log offline (`WANDB_MODE=offline`), so the history that W&B's
server would receive from each run online is read from its run directory (`history(run_id)`), which is
where Hyperband's judgement gets it from. `exit_when_done`: an idle agent of a sweep with nothing left
to propose is told `exit`, which is how a finished sweep lets its agents go.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import sweeps
import yaml


class AgentServer:
    """`runs`: (run id, {name: value}) in the order agents are to get them; None: W&B's engine proposes."""

    def __init__(
        self,
        sweep: dict,
        runs: list[tuple[str, dict]] | None = None,
        *,
        sweep_id: str | None = None,
        history: Callable[[str], list[dict]] | None = None,
        exit_when_done: bool = False,
    ):
        self.sweep, self.fixed = sweep, None if runs is None else list(runs)
        self.sweep_id, self.history, self.exit_when_done = sweep_id, history, exit_when_done
        self.heartbeats = 0
        self.deleted = False  # the sweep deleted: heartbeats get 404, as from W&B's server
        self.agents: dict[str, str] = {}  # agent id -> host
        self.handed: dict[str, tuple[str, dict]] = {}  # run id -> (agent id, params), in hand-out order
        self.running: dict[str, set[str]] = {}  # agent id -> runs it reported in its last heartbeat
        self.ended: set[str] = set()  # runs an agent stopped reporting
        self.queued: dict[str, list[dict]] = {}  # agent id -> commands to send with its next heartbeat
        self.stops_sent: set[str] = set()
        self.ids = (f"run{i:03d}" for i in itertools.count())
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                if server.deleted and "Heartbeat" in body.get("query", ""):
                    return self.send_error(404, "sweep not found")
                data = json.dumps({"data": server.answer(body.get("query", ""), body.get("variables") or {})})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client killed mid-call
                    self.wfile.write(data.encode())

            def log_message(self, *args) -> None:  # quiet
                pass

        self.handler = Handler
        self._listen(0)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def _listen(self, port: int) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", port), self.handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> AgentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.shutdown()
        self.http.server_close()

    def back(self) -> None:
        """After `__exit__` (W&B's server unreachable: connections refused): listening again, on its port."""
        self._listen(int(self.url.rsplit(":", 1)[1]))
        self.thread.start()

    # --- what a test does, as a user or W&B's server would -------------------------------------------
    def stop(self, run_id: str) -> None:
        """A user's stop of one run (the web app's stop button, as far as the agent hears of it)."""
        with self.lock:
            agent_id = self.handed[run_id][0]
            self.queued.setdefault(agent_id, []).append({"type": "stop", "run_id": run_id})

    def cancel(self) -> None:
        """The sweep cancelled: every agent is told `exit`."""
        with self.lock:
            self.fixed = []
            for agent_id in self.agents:
                self.queued.setdefault(agent_id, []).append({"type": "exit"})

    # --- the GraphQL calls ---------------------------------------------------------------------------
    def answer(self, query: str, variables: dict) -> dict:
        if "SweepWithRuns" in query or "query Sweep(" in query:
            if self.sweep_id is not None and variables.get("sweep") != self.sweep_id:
                return {"project": {"sweep": None}}
            sweep = {
                "id": "sweep-1",
                "name": variables.get("sweep"),
                "method": self.sweep.get("method"),
                "state": "RUNNING",
                "config": yaml.safe_dump(self.sweep),
                "runs": {"edges": []},
            }
            return {"project": {"sweep": sweep}}
        if "CreateAgent" in query:
            with self.lock:
                agent_id = f"agent-{len(self.agents) + 1}"
                self.agents[agent_id] = variables.get("host", "")
            return {"createAgent": {"agent": {"id": agent_id}}}
        if "Heartbeat" in query:
            agent_id = variables.get("id")
            states = json.loads(variables.get("runState") or "{}")
            with self.lock:
                self.heartbeats += 1
                commands = self._heartbeat(agent_id, {r for r, alive in states.items() if alive})
            return {"agentHeartbeat": {"agent": {"id": agent_id}, "commands": json.dumps(commands)}}
        if "viewer" in query.lower():
            return {"viewer": {"id": "u1", "entity": "me", "username": "me", "flags": "{}", "teams": {"edges": []}}}
        return {}

    def _heartbeat(self, agent_id: str, running: set[str]) -> list[dict]:
        before = self.running.get(agent_id, set())
        self.ended |= before - running
        self.running[agent_id] = running
        commands = self.queued.pop(agent_id, [])
        for run_id in self._hyperband_stops() & running:
            commands.append({"type": "stop", "run_id": run_id})
            self.stops_sent.add(run_id)
        if not running and not any(c["type"] == "exit" for c in commands):
            proposal = self._propose()
            if proposal is not None:
                run_id, params = proposal
                self.handed[run_id] = (agent_id, params)
                args = {k: {"value": v} for k, v in params.items()}
                commands.append({"type": "run", "run_id": run_id, "args": args, "program": ""})
            elif self.exit_when_done:
                commands.append({"type": "exit"})
        return commands

    def _engine_runs(self) -> list[sweeps.SweepRun]:
        out = []
        alive = set().union(*self.running.values()) if self.running else set()
        for run_id, (_, params) in self.handed.items():
            history = self.history(run_id) if self.history else []
            state = sweeps.RunState.running if run_id in alive or run_id not in self.ended else sweeps.RunState.finished
            summary = {"val/acc": history[-1]["val/acc"]} if history else {}
            out.append(sweeps.SweepRun(name=run_id, state=state, config={k: {"value": v} for k, v in params.items()},
                                       history=history, summary_metrics=summary))  # fmt: skip
        return out

    def _propose(self) -> tuple[str, dict] | None:
        if self.fixed is not None:
            return self.fixed.pop(0) if self.fixed else None
        cap = self.sweep.get("run_cap")
        if cap is not None and len(self.handed) >= cap:  # the server's job: the engine does not count
            return None
        (proposal,) = sweeps.next_runs(self.sweep, self._engine_runs(), n=1)
        if proposal is None:
            return None
        params = json.loads(json.dumps({k: v["value"] for k, v in proposal.config.items()}, default=lambda v: v.item()))
        return next(self.ids), params

    def _hyperband_stops(self) -> set[str]:
        if "early_terminate" not in self.sweep or self.history is None:
            return set()
        runs = [r for r in self._engine_runs() if r.history]
        if not any(r.state == sweeps.RunState.running for r in runs):
            return set()
        return {r.name for r in sweeps.stop_runs(self.sweep, runs)} - self.stops_sent
