"""What `fcn-sweep sweep` shows while it runs.

On a terminal: a sweep-level bar (runs done out of the count asked for, best val acc, ETA) and a
live line per worker, redrawn in place. Anywhere else (a log file, CI, `nohup`, SLURM's `.out`)
nothing can be redrawn in place, and a redraw would append the bar and every worker line again at
each tick; there it prints one plain line per run that ends, and a summary when the sweep stops.

The bar's total is what the user asked for: `--count N` (this invocation's runs), else every run
the sweep will ever have (a grid's size, or `run_cap`, times `--repeats`), else `?`.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .. import formatting
from .store import Store, StoredRun

ENDED = ("finished", "diverged", "stopped", "crashed")


class Display:
    def __init__(
        self,
        store: Store,
        workers: list[str],
        enabled: bool,
        total: int | None,
        per_invocation: bool,
        swept: list[str] = (),
        file: TextIO | None = None,
        live: bool | None = None,
    ):
        """`total`: the runs asked for (None: unbounded); `per_invocation`: whether they are counted
        from this invocation's start (`--count`) or over the whole sweep; `swept`: the parameters a
        run's line names; `live`: redraw in place (default: when `file` is a terminal)."""
        self.store, self.workers, self.total, self.swept = store, workers, total, list(swept)
        self.file = file or sys.stderr
        self.enabled = enabled
        self.live = self.file.isatty() if live is None else live
        self.began = time.time()
        self.since = store.now()  # runs that ended before this invocation are not its to report
        self.done_before = store.slots()[0]
        self.seen: set[str] = set()
        self.ended: list[StoredRun] = []  # runs that ended during this invocation, in the order they did
        self.per_invocation = per_invocation
        self.bars = None
        if enabled and self.live:
            self.bars = self._bars()

    # --- what is counted --------------------------------------------------------------------------
    def done(self) -> int:
        """Runs done: those that ended in this invocation (`--count` counts claims, and every claim
        ends), or slots done for good over the whole sweep."""
        return len(self.ended) if self.per_invocation else self.store.slots()[0]

    def _collect(self) -> list[StoredRun]:
        ended = self.store.runs(ENDED, ended_since=self.since)
        new = sorted((r for r in ended if r.id not in self.seen), key=lambda r: r.ended or 0)
        self.seen.update(r.id for r in new)  # `since` is inclusive: a run ending at that instant comes twice
        self.since = max((r.ended for r in new if r.ended is not None), default=self.since)
        self.ended += new
        return new

    def of_total(self, done: int | None = None) -> str:
        return f"{self.done() if done is None else done}/{'?' if self.total is None else self.total}"

    # --- off a terminal: plain lines --------------------------------------------------------------
    def run_line(self, r: StoredRun, done: int | None = None) -> str:
        status = r.status + (f" ({r.stop_reason})" if r.stop_reason else "")
        params = " ".join(f"{k}={formatting.value(r.params.get(k))}" for k in self.swept if k in r.params)
        val = formatting.metric(r.summary.get("best_val_acc"))
        return (
            f"[{self.of_total(done)}] {r.id} {status} at epoch {r.epoch}/{r.config.epochs}, best val acc {val} {params}"
        )

    def summary(self) -> str:
        """The invocation's own line; the sweep's counts follow it once, from `fcn-sweep status`."""
        best = self.store.best()
        top = f"; best val acc {formatting.metric(best.summary['best_val_acc'])} ({best.id})" if best else ""
        elapsed = time.strftime("%H:%M:%S", time.gmtime(time.time() - self.began))
        return f"sweep: {formatting.plural(len(self.ended), 'run')} ended in {elapsed}{top}"

    # --- on a terminal: bars ----------------------------------------------------------------------
    def _bars(self) -> list:
        from tqdm import tqdm

        fmt = None if self.total is not None else "{desc}: {n_fmt}/? {unit}s [{elapsed}, {rate_fmt}{postfix}]"
        bars = [
            tqdm(total=self.total, initial=self.done(), desc="sweep", unit="run", file=self.file, dynamic_ncols=True,
                 smoothing=0, bar_format=fmt)
        ]  # fmt: skip
        bars += [
            tqdm(bar_format="{desc}", desc=f"{w}: starting", position=i + 1, file=self.file, leave=False)
            for i, w in enumerate(self.workers)
        ]
        return bars

    def _redraw(self) -> None:
        sweep_bar = self.bars[0]
        sweep_bar.update(self.done() - sweep_bar.n)
        best = self.store.best()
        if best is not None:
            sweep_bar.set_postfix_str(f"best val acc {best.summary['best_val_acc']:.4f}", refresh=False)
        running = {r.worker.split(":")[0]: r for r in self.store.runs(["running"]) if r.worker}
        for name, bar in zip(self.workers, self.bars[1:], strict=True):
            r = running.get(name)
            if r is None:
                bar.set_description_str(f"{name}: idle", refresh=False)
            else:
                last = self.store.last_epoch(r.id) if r.epoch else None
                val = f" val acc {last['val/acc']:.4f}" if last else ""
                bar.set_description_str(
                    f"{name}: {r.id} {r.config.arch} {r.config.optimizer} lr={formatting.sig(r.config.lr)} "
                    f"epoch {r.epoch}/{r.config.epochs}{val}",
                    refresh=False,
                )
        for bar in self.bars:
            bar.refresh()

    # --- the runner's calls -----------------------------------------------------------------------
    def update(self) -> None:
        if not self.enabled:
            return
        new = self._collect()
        if self.bars:
            self._redraw()
            return
        done_now = None if self.per_invocation else self.store.slots()[0]
        for k, r in enumerate(new, len(self.ended) - len(new) + 1):
            # Each line counts up to its own run, also when several ended within one tick; an attempt
            # that leaves its slot open (crashed, preempted) cannot push the count past the store's.
            print(self.run_line(r, k if done_now is None else min(self.done_before + k, done_now)),
                  file=self.file, flush=True)  # fmt: skip

    def close(self) -> None:
        if not self.enabled:
            return
        self.update()
        if self.bars:
            for bar in self.bars:
                bar.close()
        else:
            print(self.summary(), file=self.file, flush=True)
