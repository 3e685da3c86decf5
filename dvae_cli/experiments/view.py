"""Seeing a long suite: runs done, running (each with its epoch and seconds per epoch), queued and
failed, and an ETA, on stderr. On a terminal a live table; otherwise one line per event; with
`--json` one JSON object per line (machines); nothing when quiet.

The runs' folders are the source: a running run's epoch and speed are read from its metrics.jsonl,
whichever process or node trains it.

Owns: the suite's progress display. Must not: write to stdout (results go there) or train.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..runfolder import read_metrics
from ..terminal import escape
from .plan import Outcome, PlannedRun

MODES = ("live", "plain", "json", "quiet")


class View:
    """A Monitor (runners.Monitor) that shows the suite in one of MODES."""

    def __init__(self, plan: list[PlannedRun], statuses: dict[Path, str], slots: int, mode: str = "plain",
                 stream: TextIO | None = None, every: float = 1.0):
        self.plan, self.slots, self.mode, self.every = plan, max(1, slots), mode, every
        self.stream = stream or sys.stderr
        self.state = {run.folder: "done" if statuses[run.folder] == "complete" else "queued" for run in plan}
        self.epoch = {run.folder: 0 for run in plan}
        self.speed: dict[Path, float] = {}  # seconds per epoch, measured
        self.messages: dict[Path, str] = {}
        self.last = 0.0
        self.live = None
        if mode == "live":
            self.live = Live(self.render(), console=Console(file=self.stream), refresh_per_second=2, transient=False)
            self.live.start()
        self.emit("plan", runs=len(plan), slots=self.slots)

    # the Monitor protocol
    def started(self, run: PlannedRun, attempt: int) -> None:
        self.state[run.folder] = "running"
        self.emit("started", run, attempt=attempt)

    def ended(self, run: PlannedRun, outcome: Outcome) -> None:
        self.state[run.folder] = "done" if outcome.ok else "failed"
        self.read(run)
        if not outcome.ok:
            self.messages[run.folder] = outcome.message
        self.emit("failed" if not outcome.ok else "done", run, status=outcome.status, message=outcome.message or None)

    def retried(self, run: PlannedRun, why: str) -> None:
        self.state[run.folder] = "queued"
        self.emit("retry", run, message=why)

    def tick(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        for run in self.plan:
            if self.state[run.folder] == "running":
                before = self.epoch[run.folder]
                self.read(run)
                if self.epoch[run.folder] != before:
                    self.emit("epoch", run, epoch=self.epoch[run.folder], epochs=run.config.epochs,
                              seconds_per_epoch=self.speed.get(run.folder))
        if self.live is not None:
            self.live.update(self.render())

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
            self.live.stop()
        self.emit("end")

    # reading and counting
    def read(self, run: PlannedRun) -> None:
        try:
            metrics = read_metrics(run.folder)
        except Exception:  # a record being replaced, or none yet: the next tick reads it
            return
        if metrics:
            self.epoch[run.folder] = metrics[-1]["epoch"]
            self.speed[run.folder] = statistics.fmean(m["seconds"] for m in metrics[-5:])

    def counts(self) -> dict[str, int]:
        states = list(self.state.values())
        return {s: states.count(s) for s in ("done", "running", "queued", "failed")}

    def eta(self) -> float | None:
        """Seconds until the plan is done: the epochs left, each at its run's measured speed (else
        the mean of its group's, else of all measured runs), spread over the slots."""
        if not self.speed:
            return None
        overall = statistics.fmean(self.speed.values())
        left = 0.0
        for run in self.plan:
            if self.state[run.folder] in ("done", "failed"):
                continue
            group = [self.speed[r.folder] for r in self.plan if r.group == run.group and r.folder in self.speed]
            speed = self.speed.get(run.folder) or (statistics.fmean(group) if group else overall)
            left += (run.config.epochs - self.epoch[run.folder]) * speed
        return left / self.slots

    # output
    def emit(self, event: str, run: PlannedRun | None = None, **fields) -> None:
        if self.mode == "json":
            record = {"event": event, **({"run": run.label, "folder": str(run.folder)} if run else {}),
                      **{k: v for k, v in fields.items() if v is not None}, **self.counts(), "eta_seconds": self.eta()}
            print(json.dumps(record), file=self.stream, flush=True)
        elif self.mode == "plain" and event != "plan":
            print(self.line(event, run, fields), file=self.stream, flush=True)

    def line(self, event: str, run: PlannedRun | None, fields: dict) -> str:
        c = self.counts()
        summary = f"[{c['done']} done, {c['running']} running, {c['queued']} queued, {c['failed']} failed; ETA {_clock(self.eta())}]"
        if run is None:
            return f"suite {event} {summary}"
        detail = {"started": f"started (attempt {fields.get('attempt')})",
                  "epoch": f"epoch {fields.get('epoch')}/{fields.get('epochs')}, "
                           f"{fields.get('seconds_per_epoch') or 0:.1f} s/epoch",
                  "done": f"done ({fields.get('status')})",
                  "failed": f"FAILED: {escape(str(fields.get('message')))} ({run.folder})",
                  "retry": escape(str(fields.get("message")))}[event]
        return f"{run.label}: {detail} {summary}"

    def render(self) -> Group:
        c = self.counts()
        head = Text(f"{c['done']} done, {c['running']} running, {c['queued']} queued, {c['failed']} failed"
                    f" of {len(self.plan)} runs; ETA {_clock(self.eta())}")
        table = Table(box=None, pad_edge=False, show_header=True)
        for column in ("running", "epoch", "s/epoch"):
            table.add_column(column, justify="left" if column == "running" else "right")
        for run in self.plan:
            if self.state[run.folder] == "running":
                speed = self.speed.get(run.folder)
                table.add_row(run.label, f"{self.epoch[run.folder]}/{run.config.epochs}",
                              "" if speed is None else f"{speed:.1f}")
        failed = [Text(f"failed: {run.label}: {escape(self.messages.get(run.folder, ''))} ({run.folder})")
                  for run in self.plan if self.state[run.folder] == "failed"]
        return Group(head, table, *failed)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = int(seconds // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds % 60):02d}s"
