"""A local stand-in for the part of W&B's server that `wandb agent` talks to, on loopback.

W&B's own client runs unmodified against it (`WANDB_BASE_URL`); only the agent's GraphQL calls are
answered, with the shapes W&B's client reads (`wandb/apis/public/sweeps.py`): `SweepWithRuns` (the
sweep's config), `CreateAgent`, and `Heartbeat`, which hands an idle agent the next of the runs it
was given and then nothing. The runs themselves log offline (`WANDB_MODE=offline`), so no run
endpoint is needed. Any other query gets an empty answer, as a server without that feature would.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml


class AgentServer:
    """`runs`: (run id, {name: value}) in the order the agent is to get them."""

    def __init__(self, sweep: dict, runs: list[tuple[str, dict]]):
        self.sweep, self.pending = sweep, list(runs)
        self.heartbeats = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                data = json.dumps({"data": server.answer(body.get("query", ""), body.get("variables") or {})})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data.encode())

            def log_message(self, *args) -> None:  # quiet
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> AgentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.http.shutdown()
        self.http.server_close()

    def answer(self, query: str, variables: dict) -> dict:
        if "SweepWithRuns" in query:
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
            return {"createAgent": {"agent": {"id": "agent-1"}}}
        if "Heartbeat" in query:
            with self.lock:
                self.heartbeats += 1
                idle = not json.loads(variables.get("runState") or "{}")
                commands = []
                if idle and self.pending:
                    run_id, params = self.pending.pop(0)
                    args = {k: {"value": v} for k, v in params.items()}
                    commands = [{"type": "run", "run_id": run_id, "args": args, "program": ""}]
            return {"agentHeartbeat": {"agent": {"id": "agent-1"}, "commands": json.dumps(commands)}}
        if "viewer" in query.lower():
            return {"viewer": {"id": "u1", "entity": "me", "username": "me", "flags": "{}", "teams": {"edges": []}}}
        return {}
