#!/usr/bin/env python3
"""The W&B path's speed, measured side by side through one loopback stand-in of W&B's agent API
(tests/wandb_server.py; W&B's own client, runs logged offline):

- the same N configs of one shape, by one `fcn-sweep wandb-agent --pack N` process and by W&B's own
  `wandb agent` (`fcn-sweep wandb-agent`, --pack 1: one `fcn-sweep train` process per run), in
  alternating rounds so that the machine's load falls on both alike; configs/hour and their ratio;
- with --hyperband, a random sweep whose runs W&B's own engine proposes and Hyperband stops
  (`sweeps.next_runs`, `sweeps.stop_runs`, fed each run's epochs from its run directory), trained by
  one packed agent: how much of its slots' epochs trained a member (the agent's last line).

    .venv/bin/python scripts/agent_measure.py [--hidden 128] [--pack 8|auto] [--runs N] [--alone M] [--epochs 2]
        [--rounds 2] [--device cpu|cuda] [--grid] [--hyperband]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

with warnings.catch_warnings():  # W&B's engine imports with a pydantic v1-style config warning
    warnings.simplefilter("ignore")
    from tests.wandb_server import AgentServer

KEY = "0" * 40  # the stand-in accepts any key; nothing here reaches W&B


def sweep_config(params: dict) -> dict:
    return {
        "method": "grid",
        "metric": {"name": "val/acc", "goal": "maximize"},
        # This interpreter, wherever it is (a GPU machine may have no `fcn-sweep` on PATH).
        "command": [sys.executable, "-m", "fcn_sweep", "train", "${args}"],
        "parameters": {k: {"value": v} for k, v in params.items()},
    }


def one_round(runs: list[tuple[str, dict]], pack: str, out: Path, device: str) -> float:
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
        command = [sys.executable, "-m", "fcn_sweep", "wandb-agent", "me/proj/bench", "--count", str(len(runs))]
        if pack != "1":  # W&B's own agent starts `fcn-sweep train --device auto`, on CUDA_VISIBLE_DEVICES
            command += ["--pack", pack, "--device", device]
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, cwd=out, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if done.returncode != 0 or len(list(out.glob("*/summary.json"))) != len(runs):
        sys.exit(f"the agent (--pack {pack}) failed (rc {done.returncode}; runs ended: "
                 f"{sorted(p.parent.name for p in out.glob('*/summary.json'))}):\n{done.stderr}")  # fmt: skip
    return seconds


def speed(args: argparse.Namespace, tmp: Path) -> None:
    hidden = [int(w) for w in args.hidden.split(",")]
    runs = [
        (f"r{i}", {"hidden": hidden, "epochs": args.epochs, "optimizer": "adam", "lr": 1e-3, "seed": i})
        for i in range(args.runs or int(args.pack))
    ]
    alone = runs[: args.alone or len(runs)]  # on a GPU, a few runs alone tell their rate
    times: dict[str, list[float]] = {"1": [], args.pack: []}
    for r in range(args.rounds):
        for pack in (args.pack, "1") if r % 2 == 0 else ("1", args.pack):
            todo = alone if pack == "1" else runs
            times[pack].append(one_round(todo, pack, tmp / f"round{r}-pack{pack}", args.device))
            print(f"round {r + 1}: --pack {pack}: {len(todo)} runs in {times[pack][-1]:.1f} s", flush=True)
    rate = {"1": len(alone) * 3600 / min(times["1"]), args.pack: len(runs) * 3600 / min(times[args.pack])}
    where = f"{os.cpu_count()} CPU cores" if args.device == "cpu" else args.device
    print(
        f"hidden {args.hidden}, {args.epochs} epoch(s), full data, on {where} (best of {args.rounds}):\n"
        f"  W&B's own agent, one `fcn-sweep train` per run ({len(alone)} runs): {rate['1']:,.0f} configs/hour\n"
        f"  fcn-sweep wandb-agent --pack {args.pack} ({len(runs)} runs):          {rate[args.pack]:,.0f} configs/hour\n"
        f"  ratio: {rate[args.pack] / rate['1']:.2f}x"
    )
    if args.grid:
        hours = 5832 * 30 / (rate[args.pack] * args.epochs)  # the grid's runs have 20, 30 or 40 epochs: 30 on average
        print(f"  the study's 5,832-run grid at that rate per epoch ({args.hidden} alone stands for its 3 networks): "
              f"{hours:.1f} h")  # fmt: skip


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
        "run_cap": 4 * (args.runs or int(args.pack)),
        "early_terminate": {"type": "hyperband", "min_iter": 1, "eta": 2},
        "parameters": {
            "hidden": {"value": [int(w) for w in args.hidden.split(",")]},
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
        command = [sys.executable, "-m", "fcn_sweep", "wandb-agent", "me/proj/bench", "--pack", args.pack,
                   "--device", args.device, "--out", str(out)]  # fmt: skip
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
    p.add_argument("--hidden", default="128", help="hidden widths, e.g. 1024,256 (default: 128)")
    p.add_argument("--pack", default="8", help="K or auto (default: 8)")
    p.add_argument("--runs", type=int, help="runs the packed agent trains (default: K)")
    p.add_argument("--alone", type=int, help="of those, how many W&B's own agent trains one at a time (default: all)")
    p.add_argument("--device", default="cpu", help="the packed agent's device (default: cpu)")
    p.add_argument("--grid", action="store_true", help="also the study's grid's wall time at the packed rate")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--hyperband", action="store_true", help="also measure a Hyperband sweep's occupancy")
    args = p.parse_args()
    if args.pack == "auto" and not args.runs:
        p.error("--pack auto needs --runs N (the runs the packed agent is handed)")
    with tempfile.TemporaryDirectory() as tmp:
        speed(args, Path(tmp))
        if args.hyperband:
            hyperband(args, Path(tmp))


if __name__ == "__main__":
    main()
