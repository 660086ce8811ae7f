#!/usr/bin/env python3
"""The W&B path's speed, measured side by side through one loopback stand-in of W&B's agent API
(tests/wandb_server.py; W&B's own client, runs logged offline):

- the same N configs of one shape, by one `fcn-sweep wandb-agent --pack N` process and by W&B's own
  `wandb agent` (`fcn-sweep wandb-agent`, --pack 1: one `fcn-sweep train` process per run), in
  alternating rounds so that the machine's load falls on both alike; configs/hour and their ratio;
- with --hyperband, a random sweep whose runs W&B's own engine proposes and Hyperband stops
  (`sweeps.next_runs`, `sweeps.stop_runs`, fed each run's epochs from its run directory), trained by
  one packed agent: how much of its slots' epochs trained a member (the agent's last line).

    .venv/bin/python scripts/agent_measure.py [--hidden 128] [--pack 8] [--epochs 2] [--rounds 2] [--hyperband]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.wandb_server import AgentServer  # noqa: E402

BIN = Path(sys.executable).parent
KEY = "0" * 40  # the stand-in accepts any key; nothing here reaches W&B


def sweep_config(params: dict) -> dict:
    return {
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "command": ["${env}", "fcn-sweep", "train", "${args}"],
        "parameters": {k: {"value": v} for k, v in params.items()},
    }


def one_round(runs: list[tuple[str, dict]], pack: int, out: Path) -> float:
    """Seconds for one agent (--pack `pack`) to take and train `runs`, start to exit."""
    with AgentServer(sweep_config(runs[0][1]), runs, sweep_id="bench", exit_when_done=True) as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
            "WANDB_BASE_URL": server.url,
            "WANDB_API_KEY": KEY,
            "WANDB_MODE": "offline",
            "FCN_SWEEP_OUT": str(out),
            "WANDB_DIR": str(out),
        }
        out.mkdir(parents=True)
        command = [str(BIN / "fcn-sweep"), "wandb-agent", "me/proj/bench", "--count", str(len(runs))]
        if pack > 1:
            command += ["--pack", str(pack), "--device", "cpu"]
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=out, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if done.returncode != 0 or len(list(out.glob("*/summary.json"))) != len(runs):
        sys.exit(f"the agent (--pack {pack}) failed (rc {done.returncode}; runs ended: "
                 f"{sorted(p.parent.name for p in out.glob('*/summary.json'))}):\n{done.stderr}")  # fmt: skip
    return seconds


def speed(args: argparse.Namespace, tmp: Path) -> None:
    runs = [
        (f"r{i}", {"hidden": [args.hidden], "epochs": args.epochs, "optimizer": "adam", "lr": 1e-3, "seed": i})
        for i in range(args.pack)
    ]
    times: dict[int, list[float]] = {1: [], args.pack: []}
    for r in range(args.rounds):
        for pack in (args.pack, 1) if r % 2 == 0 else (1, args.pack):
            times[pack].append(one_round(runs, pack, tmp / f"round{r}-pack{pack}"))
            print(f"round {r + 1}: --pack {pack}: {times[pack][-1]:.1f} s", flush=True)
    rate = {k: len(runs) * 3600 / min(v) for k, v in times.items()}
    print(
        f"{len(runs)} runs of hidden [{args.hidden}], {args.epochs} epoch(s), full data, on {os.cpu_count()} CPU cores "
        f"(best of {args.rounds}):\n"
        f"  W&B's own agent, one `fcn-sweep train` per run: {rate[1]:,.0f} configs/hour\n"
        f"  fcn-sweep wandb-agent --pack {args.pack}:            {rate[args.pack]:,.0f} configs/hour\n"
        f"  ratio: {rate[args.pack] / rate[1]:.2f}x"
    )


def hyperband(args: argparse.Namespace, tmp: Path) -> None:
    import json

    out = tmp / "hyperband"
    out.mkdir()

    def history(run_id: str) -> list[dict]:
        path = out / run_id / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    sweep = {
        "method": "random",
        "metric": {"name": "val/acc", "goal": "maximize"},
        "run_cap": 4 * args.pack,
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {
            "hidden": {"value": [args.hidden]},
            "epochs": {"value": 8},
            "subset": {"value": 8192},
            "optimizer": {"values": ["sgd", "adam"]},
            "lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
        },
    }
    with AgentServer(sweep, sweep_id="bench", history=history, exit_when_done=True) as server:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
            "WANDB_BASE_URL": server.url,
            "WANDB_API_KEY": KEY,
            "WANDB_MODE": "offline",
            "FCN_SWEEP_AGENT_POLL_S": "0.5",
        }
        command = [str(BIN / "fcn-sweep"), "wandb-agent", "me/proj/bench", "--pack", str(args.pack), "--device", "cpu",
                   "--out", str(out)]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the Hyperband agent failed:\n{done.stderr[-3000:]}")
    statuses = [json.loads((d / "summary.json").read_text())["status"] for d in out.iterdir() if d.is_dir()]
    stopped, sent = statuses.count("stopped"), len(server.stops_sent)
    print(f"Hyperband (min_iter 1, eta 2, 8 epochs), a random sweep of {len(statuses)} runs, --pack {args.pack}: "
          f"{stopped} stopped early by W&B's engine ({sent} stop commands)")  # fmt: skip
    print("  " + done.stderr.strip().splitlines()[-1].removeprefix("fcn-sweep wandb-agent: "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--pack", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hyperband", action="store_true", help="also measure a Hyperband sweep's occupancy")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        speed(args, Path(tmp))
        if args.hyperband:
            hyperband(args, Path(tmp))


if __name__ == "__main__":
    main()
