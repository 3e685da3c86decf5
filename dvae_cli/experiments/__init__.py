"""Experiments: suites of runs planned, executed and read into tables.

- plan.py: a run of a suite (`PlannedRun`: its complete settings and its folder), what a folder
  holds already, the evaluation cache, mean and sd over seeds;
- runners.py: what executes a plan: `Sequential` (this process), `Workers` (N processes on this
  machine, or its GPUs), `RayRunner` (a Ray cluster); worker.py is a worker process;
- view.py: the live view of a running suite; estimate.py: `--dry-run`'s measured estimate;
- thesis.py and reinmax.py: the two suites, each planning its runs and reading them into tables;
  records.json: the published per-seed records the reinmax suite shows beside its rows.

Both suites go through `run_plan` and the same runners::

    from dvae_cli.experiments import Workers, reinmax, run_plan
    plan = reinmax.plan_suite([(8, 4)], ["reinmax", "st"], [0, 1], "runs/suite", base)
    outcomes = run_plan(plan, Workers(2))
    results = reinmax.read_suite(plan, outcomes, "runs/suite", base)
    so_far = reinmax.read_suite(plan, report_plan(plan), "runs/suite", base)  # mid-suite, training nothing

Owns: `run_plan`, the one way a plan is executed. Must not: spell CLI flags or print.
"""

from __future__ import annotations

from pathlib import Path

from ..progress import Reporter
from .plan import Outcome, PlannedRun, check_plan, report_plan
from .runners import RayRunner, Runner, Sequential, Workers
from .view import View


def run_plan(plan: list[PlannedRun], runner: Runner | None = None, reporter: Reporter | None = None,
             view: str = "quiet") -> dict[Path, Outcome]:
    """Execute every run of `plan` with `runner` (default: one after another here): each complete run
    is skipped, each partial one resumed, the rest trained. Returns each folder's Outcome; a failed run
    is an Outcome too (the others go on). `view` is one of view.MODES."""
    runner, reporter = runner or Sequential(), reporter or Reporter()
    statuses = check_plan(plan)
    monitor = View(plan, statuses, runner.slots or 1, view)  # a Ray runner sets its slots once its cluster is up
    try:
        outcomes = runner.run([run for run in plan if statuses[run.folder] != "complete"], monitor, reporter)
    finally:
        monitor.close()
    return {run.folder: outcomes.get(run.folder, Outcome("complete")) for run in plan}


__all__ = ["Outcome", "PlannedRun", "RayRunner", "Sequential", "Workers", "report_plan", "run_plan"]
