"""`fcn-sweep wandb-agent SWEEP --pack K`: one process that holds up to K runs of a sweep on W&B's
server and trains the runs of one shape (`packed.pack_key`) together, as a sweep worker does with
the runs of its store.

W&B's server hands an agent one run at a time, and only while the agent reports no run of its own,
so the process registers K agents (slots, hosts `HOST-0` ... `HOST-K-1`), as W&B's launch
scheduler does for its workers. Between packs every slot is heartbeated: an idle one may be handed
a run, a held one hears of its run's `stop`; once every slot holds a run, or a round of heartbeats
brought no new one (the server has nothing more now), the largest group of one shape trains as a
pack and the others wait for the next. While a pack trains, every slot holding a run (the pack's,
and those waiting for a later pack) is heartbeated every POLL_S with its run (W&B's agent beats
every 5 s), which brings `stop` commands (Hyperband, a user); idle slots stay silent, as the launch
scheduler's do, so that no run is handed out that would wait a whole pack before it starts.

Each member is a W&B run exactly as `fcn-sweep train` logs it alone (WandbTracker, joined to the
sweep through its settings: see tracking.SweepMember) and has its run directory OUT/<run id>, which
`fcn-sweep train --from` re-runs. A `stop` ends that member alone at the end of the epoch in flight,
as `stopped`; `exit` ends the runs of its slot the same way and retires the slot (W&B's server
sends it to every agent of a cancelled or finished sweep). SIGINT, SIGTERM and SIGUSR1 end every
member within a batch as `stopped`, its best model kept and logged, and the process exits 0. A run
that was handed out but had not started training is not started: W&B's server sees it end without
a heartbeat and hands it out again or marks it, as it does for a `wandb agent` that was stopped.
"""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import tracking
from ..config import ConfigError, RunConfig
from ..tracking.wandb_agent_calls import AgentCalls, AgentCallsChanged, SweepNotFound, SweepPath
from .worker import Interrupt, WandbRuns, this_host, warm_up

POLL_ENV = "FCN_SWEEP_AGENT_POLL_S"
POLL_S = float(os.environ.get(POLL_ENV) or 5.0)  # W&B's own agent heartbeats every 5 s
AT_ONCE = 16  # heartbeats (and registrations) in flight at once
# Variables a `wandb agent` sets for the one run it starts; in a process holding many runs they would
# make wandb give every member the same run id and sweep parameters.
RUN_VARIABLES = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")


@dataclass(frozen=True)
class AgentSpec:
    sweep: SweepPath
    pack: int  # slots: runs held at once, and the largest pack
    out: str  # run directories: OUT/<run id>
    device: str
    threads: int
    wandb_mode: str  # the members' W&B runs: online, or offline for a later `wandb sync`
    count: int | None = None  # runs this process takes before it leaves; None: until the sweep ends
    group: str | None = None
    name: str = "wandb-agent"


@dataclass
class Member:
    run_id: str
    cfg: RunConfig
    slot: Slot
    stop: threading.Event = field(default_factory=threading.Event)  # this run alone, at the epoch's end


@dataclass
class Slot:
    index: int
    agent_id: str
    member: Member | None = None
    retired: bool = False  # told `exit`, or the process took its --count: never heartbeated idle again


def each(call: Callable, items: list, halt: Callable[[], bool] = lambda: False) -> list:
    """`call` on every item, AT_ONCE at a time: the answers (or exceptions) in order, None for any not
    back when `halt()` turned true. A round trip to W&B's cloud takes a few hundred milliseconds, so a
    round over hundreds of slots one at a time would keep the device waiting for minutes; and a call
    to a server that is away waits out wandb's own 60 s, so the threads are daemons that a leaving
    process does not wait for (SLURM's scancel, for one, kills what is left after 30 s)."""
    answers: list = [None] * len(items)
    todo = queue.SimpleQueue()
    for i in range(len(items)):
        todo.put(i)

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                answers[i] = call(items[i])
            except Exception as e:
                answers[i] = e

    threads = [threading.Thread(target=work, daemon=True, name="wandb-agent") for _ in range(min(AT_ONCE, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive() and not halt():
            t.join(0.1)
    return answers


def raise_any(answers: list) -> list:
    for a in answers:
        if isinstance(a, Exception):
            raise a
    return answers


class Slots:
    """The K registered agents and the runs they hold; every command of W&B's server lands here."""

    def __init__(self, calls: AgentCalls, k: int, count: int | None, say: Callable[[str], None]):
        hosts = [f"{this_host()}-{i}" for i in range(k)]
        self.calls, self.say, self.left = calls, say, float("inf") if count is None else count
        self.slots = [Slot(i, agent_id) for i, agent_id in enumerate(raise_any(each(calls.register, hosts)))]
        self.waiting: list[Member] = []  # held, not training yet, in the order they came
        self.max_pack = k  # halved when a pack runs out of device memory
        self.lock = threading.Lock()  # commands come from the main thread (fill) and the heartbeat thread

    def beat(self, slot: Slot) -> None:
        running = [slot.member.run_id] if slot.member else []
        try:
            commands = self.calls.heartbeat(slot.agent_id, running)
        except SweepNotFound as e:  # as W&B's agent does: the runs in flight finish, no new one is taken
            self.say(f"{e}: agent {slot.index} takes no more runs")
            slot.retired = True
            return
        for command in commands:
            with self.lock:
                handler = self.COMMANDS.get(command.get("type"))
                if handler is None:
                    self.say(f"agent {slot.index}: ignoring a command of type {command.get('type')!r}")
                else:
                    handler(self, slot, command)

    def _run(self, slot: Slot, command: dict) -> None:
        run_id = command.get("run_id") or ""
        if slot.member is not None or slot.retired:  # a server's retry: the slot took its run already
            held = slot.member.run_id if slot.member else "none (it was told exit)"
            self.say(f"agent {slot.index}: ignoring run {run_id}; this agent holds {held}")
            return
        self.left -= 1  # as `wandb agent --count` counts: every run handed out, a failed one too
        if self.left <= 0:
            for s in self.slots:
                s.retired = True  # no more runs taken; slots with a run still report it
        params = {k: v["value"] if isinstance(v, dict) else v for k, v in (command.get("args") or {}).items()}
        try:
            cfg = RunConfig.from_dict(params)
        except ConfigError as e:  # what `fcn-sweep train` would exit 2 with: the run never starts
            self.say(f"run {run_id}: not started: {e}")
            return
        slot.member = Member(run_id, cfg, slot)
        self.waiting.append(slot.member)

    def _stop(self, slot: Slot, command: dict) -> None:
        m = slot.member
        if m is None or m.run_id != command.get("run_id"):
            return
        if m in self.waiting:  # not started: it is simply not trained
            self.waiting.remove(m)
            slot.member = None
            self.say(f"run {m.run_id}: stopped by W&B before it started")
        else:
            m.stop.set()

    def _exit(self, slot: Slot, command: dict) -> None:
        slot.retired = True
        if slot.member is not None:
            self._stop(slot, {"run_id": slot.member.run_id})

    COMMANDS: ClassVar[dict[str, Callable]] = {"run": _run, "resume": _run, "stop": _stop, "exit": _exit}

    def fill(self, halt: Callable[[], bool]) -> None:
        """Heartbeat every slot until each holds a run or a round brings no new one."""
        while not halt():
            before = len(self.waiting)
            held = [s for s in self.slots if s.member is not None]
            # No more idle slots than --count has runs left: each would be handed a run it must not take.
            idle = [s for s in self.slots if s.member is None and not s.retired][: int(min(self.left, len(self.slots)))]
            raise_any(each(self.beat, held + idle, halt))
            if not idle or len(self.waiting) == before:
                return

    def next_pack(self) -> list[Member]:
        """The largest group of waiting runs of one shape (the earliest group on a tie)."""
        from ..packed import pack_key

        with self.lock:
            groups: dict[str, list[Member]] = {}
            for m in self.waiting:
                groups.setdefault(pack_key(m.cfg), []).append(m)
            if not groups:
                return []
            pack = max(groups.values(), key=len)[: self.max_pack]
            self.waiting = [m for m in self.waiting if m not in pack]
            return sorted(pack, key=lambda m: m.run_id)  # runs come back in any order: this one reads alike

    def release(self, members: list[Member]) -> None:
        with self.lock:
            for m in members:
                m.slot.member = None

    def done(self) -> bool:
        """No run held and none to be taken: every slot retired (exit, or --count taken)."""
        return all(s.retired and s.member is None for s in self.slots)

    def all_exited(self, members: list[Member]) -> bool:
        return all(m.slot.retired and m.stop.is_set() for m in members)


class Beating:
    """While a pack trains, every slot holding a run is heartbeated every POLL_S from a thread of its
    own: the pack's, and those of runs waiting for a later pack, which W&B's server would otherwise
    see silent for a whole pack (and which a `stop` can reach before they start)."""

    def __init__(self, slots: Slots, say: Callable[[str], None]):
        self.slots, self.say = slots, say
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="wandb-heartbeat", daemon=True)

    def __enter__(self) -> Beating:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()  # a heartbeat still waiting on a server that is away is left to itself (see `each`)
        self.thread.join()

    def _loop(self) -> None:
        while not self.done.wait(POLL_S):
            live = [s for s in self.slots.slots if s.member is not None]
            for slot, error in zip(live, each(self.slots.beat, live, self.done.is_set), strict=True):
                if isinstance(error, Exception):  # a changed call: the pack trains on, the next round says it again
                    self.say(f"heartbeat of agent {slot.index} failed: {error}")


def clear_run_variables() -> None:
    """Before wandb is first used in this process: wandb reads its environment once, into settings
    every later run inherits."""
    for name in RUN_VARIABLES:
        os.environ.pop(name, None)


def main(spec: AgentSpec, calls: AgentCalls) -> int:
    """The packed agent: trains until the sweep is done for it (every slot told `exit`, or --count
    runs taken) or a signal; exits 0 either way."""
    import torch

    from .. import data as data_mod

    say = lambda text: print(f"fcn-sweep wandb-agent: {text}", file=sys.stderr, flush=True)  # noqa: E731
    torch.set_num_threads(spec.threads)
    interrupted = Interrupt()
    interrupted.install()
    warm_up(spec.device, spec.wandb_mode)
    slots = Slots(calls, spec.pack, spec.count, say)
    say(f"{spec.pack} agents registered for sweep {spec.sweep}; runs train on {spec.device}, in packs of one shape")
    data_for = functools.cache(lambda subset: data_mod.load(spec.device, subset))
    wandb_runs = WandbRuns(spec, kept="their run directories hold")
    busy = Occupancy(spec.pack)
    try:
        while not interrupted.is_set():
            slots.fill(interrupted.is_set)
            pack = slots.next_pack()
            if not pack:
                if slots.done():
                    break
                interrupted.wait(POLL_S)
                continue
            results = train_pack(spec, pack, slots, data_for(pack[0].cfg.subset), interrupted, wandb_runs, say)
            busy.add(results)
            slots.release(pack)
            wandb_runs.report(wait=False)
    except AgentCallsChanged as e:  # between packs: no run is in flight
        say(str(e))
        return 1
    finally:
        wandb_runs.close()
    why = f"{interrupted.signal_name or 'SIGINT'}: the runs in flight ended as stopped" if interrupted.is_set() else (
        "the sweep has no more runs for it")  # fmt: skip
    say(f"{busy.line()}; leaving ({why})")
    return 0


def train_pack(spec, pack: list[Member], slots: Slots, data, interrupted, wandb_runs, say) -> list:
    """One pack trained, each member logged as its own W&B run and run directory; the results (none
    when the pack crashed: each member without an outcome then ends `crashed`, with the reason)."""
    import torch

    from ..footprint import free_device_memory, out_of_memory_line
    from ..packed import fit_packed

    rundirs, trackers = [], []
    for m in pack:
        rundirs.append(tracking.RunDirTracker(Path(spec.out).resolve(), m.run_id))
        member = tracking.SweepMember(spec.sweep, on_stop=m.stop.set)
        trackers.append(tracking.Trackers([rundirs[-1], *wandb_runs.tracker(m.run_id, rundirs[-1], member)]))
    say(f"training {len(pack)} run(s) of {pack[0].cfg.arch}: {', '.join(m.run_id for m in pack)}")
    # The whole pack stops on a signal, or once every member's agent was told `exit`.
    halt = lambda: interrupted.is_set() or slots.all_exited(pack)  # noqa: E731
    try:
        with Beating(slots, say):
            return fit_packed(
                [m.cfg for m in pack], trackers, data, spec.device, should_stop=halt,
                member_stops=[m.stop.is_set for m in pack],
            )  # fmt: skip
    except torch.cuda.OutOfMemoryError:
        # W&B's server cannot take its runs back, as a store can: they end crashed with what they
        # needed, and the next packs are half as large.
        why = f"out of memory on {spec.device} in a pack of {len(pack)}: {out_of_memory_line(pack[0].cfg, spec.device)}"
        if len(pack) > 1:
            slots.max_pack = len(pack) // 2
            why += f"; this agent's next packs hold at most {slots.max_pack}"
        free_device_memory()
    except OSError:
        raise  # this host's disk, not the configs: the agent leaves, and W&B sees the runs end
    except Exception:  # a bug in one shape must not take the agent down
        why = traceback.format_exc(limit=3)
    say(f"run(s) {', '.join(m.run_id for m in pack)} crashed: {why}")
    for m, rundir, tracker in zip(pack, rundirs, trackers, strict=True):
        if rundir.path.exists() and not (rundir.path / "summary.json").exists():  # started, not ended
            tracker.finish(crashed(m.cfg))
    return []


def crashed(cfg: RunConfig):
    from ..model import build_fcn, param_count
    from ..results import FitResult

    return FitResult(cfg, "crashed", param_count(build_fcn(cfg)))


class Occupancy:
    """How much of the slots' time trained a member: Hyperband's stops leave holes in a pack."""

    def __init__(self, k: int):
        self.k, self.runs, self.packs, self.member_epochs, self.slot_epochs = k, 0, 0, 0, 0
        self.t0 = time.monotonic()

    def add(self, results: list) -> None:
        if not results:
            return
        epochs = [len(r.history) for r in results]
        self.runs, self.packs = self.runs + len(results), self.packs + 1
        self.member_epochs += sum(epochs)
        self.slot_epochs += self.k * max(epochs)

    def line(self) -> str:
        share = f"{self.member_epochs / self.slot_epochs:.0%}" if self.slot_epochs else "n/a"
        hours = (time.monotonic() - self.t0) / 3600
        return (f"{self.runs} run(s) in {self.packs} pack(s), {self.runs / hours:.0f} runs/hour; {share} of the "
                f"{self.k} slots' epochs trained a member ({self.member_epochs} of {self.slot_epochs})")  # fmt: skip
