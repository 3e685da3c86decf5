"""Runners: what executes a plan. The run is the unit and its folder is its state, so every runner
does the same thing to each run (`ensure_trained`: skip it when complete, resume it when partial,
train it otherwise), only elsewhere:

- `Sequential`: one run after another in this process (`--parallel S`: seeds of one row trained
  together as one batched computation, multirun.py);
- `Workers`: N runs at once on this machine, each a separate process (`python -m
  dvae_cli.experiments.worker`) with its own thread count, or its own GPU slot;
- `RayRunner`: each run a task on a Ray cluster, asking for CPUs or a fraction of a GPU.

What every runner holds (tests/test_runners.py):
- a worker that dies (kill -9, a lost node) has its run dispatched again, which resumes from the
  last complete epoch: the same numbers as an uninterrupted run;
- a run whose folder another driver is writing (its lock, runlock.py) is never trained twice: it
  waits, and is taken up again once that driver lets go (complete by then, it is skipped);
- a failed run (NaN, bad settings) is reported with its folder and message; the others go on;
- a stop signal (Ctrl-C) stops every worker, each keeping its last complete epoch, and is raised
  again to the caller (exit 130 at the command line).

Owns: dispatching runs, retries, worker processes and Ray tasks. Must not: read results or print
(the Monitor, view.py, shows what happens).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..errors import DVAEError
from ..interrupts import Interrupted
from ..multirun import resume_together, train_together
from ..progress import Reporter
from ..runlock import FolderInUse, in_use
from ..train import TrainConfig, resume, train
from .plan import Outcome, PlannedRun, run_status

LOGS, TOKEN = ".logs", ".suite-token"  # in the suite's output folder: each run's worker log; the driver's token
EXIT_FAILED, EXIT_BUSY = 1, 75  # a worker's exit codes (75: EX_TEMPFAIL, the folder is another's just now)
RETRIES = 3  # dispatches of a run whose worker died, beyond the first
BUSY_WAIT = 10.0  # seconds before a run held by another driver is looked at again


def ensure_trained(config: TrainConfig, folder: Path, reporter: Reporter) -> str:
    """Bring `folder` to config.epochs complete epochs; returns 'complete', 'resumed' or 'trained'."""
    status = run_status(config, folder)
    if status == "resumed":
        resume(folder, config.epochs, config.device, reporter)
    elif status == "trained":
        train(config, folder, reporter)  # a run stopped before its first epoch is started over
    return status


class Monitor(Protocol):
    """What a runner tells about the runs as they go (view.py draws it)."""

    slots: int  # runs at once (a Ray runner knows it once its cluster is up)

    def started(self, run: PlannedRun, attempt: int) -> None: ...
    def ended(self, run: PlannedRun, outcome: Outcome) -> None: ...
    def retried(self, run: PlannedRun, why: str) -> None: ...
    def tick(self) -> None: ...


class Runner(Protocol):
    slots: int  # runs at once

    def run(self, plan: list[PlannedRun], monitor: Monitor, reporter: Reporter) -> dict[Path, Outcome]: ...


@dataclass
class Sequential:
    """One run after another in this process; with `parallel` > 1 the seeds of one group (same
    settings but the seed) `parallel` at a time as one batched computation (multirun.py)."""

    parallel: int = 1
    threads: int | None = None
    slots: int = 1

    def run(self, plan: list[PlannedRun], monitor: Monitor, reporter: Reporter) -> dict[Path, Outcome]:
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            return self._run(plan, monitor, reporter)
        finally:
            torch.set_num_threads(before)

    def _run(self, plan: list[PlannedRun], monitor: Monitor, reporter: Reporter) -> dict[Path, Outcome]:
        outcomes: dict[Path, Outcome] = {}
        for chunk in self._chunks(plan):
            for run in chunk:
                monitor.started(run, 1)
            try:
                statuses = self._train(chunk, reporter)
                results = [Outcome(status) for status in statuses]
            except DVAEError as e:  # NaN, bad settings or a folder in use: reported, and the suite goes on
                results = [Outcome("failed", str(e))] * len(chunk)
            for run, outcome in zip(chunk, results):
                outcomes[run.folder] = outcome
                monitor.ended(run, outcome)
        return outcomes

    def _chunks(self, plan: list[PlannedRun]) -> list[list[PlannedRun]]:
        if self.parallel == 1:
            return [[run] for run in plan]
        chunks: list[list[PlannedRun]] = []
        for group in dict.fromkeys(run.group for run in plan):
            members = [run for run in plan if run.group == group]
            for kind in ("trained", "resumed", "complete"):  # new runs together, partial ones together
                same = [run for run in members if run_status(run.config, run.folder) == kind]
                chunks += [same[i : i + self.parallel] for i in range(0, len(same), self.parallel)]
        return chunks

    def _train(self, chunk: list[PlannedRun], reporter: Reporter) -> list[str]:
        if len(chunk) == 1:
            return [ensure_trained(chunk[0].config, chunk[0].folder, reporter)]
        kind = run_status(chunk[0].config, chunk[0].folder)
        configs, folders = [run.config for run in chunk], [run.folder for run in chunk]
        if kind == "trained":
            train_together(configs, folders, reporter)
        elif kind == "resumed":
            resume_together(folders, configs[0].epochs, configs[0].device, reporter)
        return [kind] * len(chunk)


@dataclass
class _Job:
    run: PlannedRun
    attempt: int = 0
    not_before: float = 0.0  # a run another driver holds waits until then


@dataclass
class Dispatcher:
    """The loop every many-at-once runner shares: keep `slots` runs going, take each back as done,
    failed, lost (dispatched again, at most RETRIES times) or busy (another driver's: later)."""

    slots: int
    retries: int = RETRIES
    jobs: deque = field(default_factory=deque)

    def run(self, plan: list[PlannedRun], backend: "Backend", monitor: Monitor) -> dict[Path, Outcome]:
        self.jobs = deque(_Job(run) for run in plan)
        monitor.slots = self.slots
        running: dict[int, tuple[_Job, object]] = {}
        outcomes: dict[Path, Outcome] = {}
        try:
            while self.jobs or running:
                for slot in range(self.slots):
                    if slot not in running and (job := self._next()):
                        if in_use(job.run.folder):  # another driver's: no worker started only to be refused
                            job.not_before = time.monotonic() + BUSY_WAIT
                            self.jobs.append(job)
                            continue
                        job.attempt += 1
                        running[slot] = (job, backend.launch(job.run, slot))
                        monitor.started(job.run, job.attempt)
                for slot, (job, handle) in list(running.items()):
                    result = backend.poll(handle)
                    if result is None:
                        continue
                    del running[slot]
                    kind, message = result
                    if kind == "ok":
                        outcomes[job.run.folder] = Outcome(message)
                        monitor.ended(job.run, outcomes[job.run.folder])
                    elif kind == "busy":
                        job.attempt -= 1
                        job.not_before = time.monotonic() + BUSY_WAIT
                        self.jobs.append(job)
                        monitor.retried(job.run, f"in use by another driver; waiting ({message})")
                    elif kind == "lost" and job.attempt <= self.retries:
                        self.jobs.appendleft(job)  # resumes from its last complete epoch
                        monitor.retried(job.run, f"worker lost ({message}); dispatched again")
                    else:
                        outcomes[job.run.folder] = Outcome("failed", message)
                        monitor.ended(job.run, outcomes[job.run.folder])
                monitor.tick()
                time.sleep(backend.poll_interval)
        except BaseException:
            for job, handle in running.values():
                backend.stop(handle)
            raise
        return outcomes

    def _next(self) -> _Job | None:
        now = time.monotonic()
        for job in list(self.jobs):
            if job.not_before <= now:
                self.jobs.remove(job)
                return job
        return None


class Backend(Protocol):
    poll_interval: float

    def launch(self, run: PlannedRun, slot: int) -> object: ...
    def poll(self, handle: object) -> tuple[str, str] | None: ...  # ('ok', status) / ('failed' | 'lost' | 'busy', why)
    def stop(self, handle: object) -> None: ...


def default_threads(workers: int) -> int:
    """Threads per run when `workers` runs share this machine: its cores divided among them."""
    return max(1, (os.cpu_count() or 1) // workers)


def worker_message(log: Path) -> str:
    """The last line a worker wrote to its log (its error, for a failed run)."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][-500:] if lines else ""


@dataclass
class Workers:
    """`workers` runs at once on this machine, each in its own process. On CPU each gets `threads`
    threads (default: cores / runs at once). On CUDA, runs are spread over the visible GPUs,
    `runs_per_gpu` on each (each worker sees one GPU: CUDA_VISIBLE_DEVICES)."""

    workers: int
    threads: int | None = None
    runs_per_gpu: int = 1
    gpus: int = 0  # visible GPUs to spread over (0: CPU runs)
    retries: int = RETRIES
    poll_interval: float = 0.2

    @property
    def slots(self) -> int:
        return self.gpus * self.runs_per_gpu if self.gpus else self.workers

    def run(self, plan: list[PlannedRun], monitor: Monitor, reporter: Reporter) -> dict[Path, Outcome]:
        return Dispatcher(self.slots, self.retries).run(plan, self, monitor)

    def launch(self, run: PlannedRun, slot: int) -> tuple[subprocess.Popen, Path]:
        threads = self.threads or default_threads(self.slots)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        log = run.folder.parent / LOGS / f"{run.folder.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        job = json.dumps({"config": run.config.to_dict(), "folder": str(run.folder), "threads": threads})
        with open(log, "ab") as out:
            process = subprocess.Popen([sys.executable, "-m", "dvae_cli.experiments.worker"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=out, env=env)
        process.stdin.write(job.encode())
        process.stdin.close()
        return process, log

    def poll(self, handle: tuple[subprocess.Popen, Path]) -> tuple[str, str] | None:
        process, log = handle
        code = process.poll()
        if code is None:
            return None
        output = process.stdout.read().decode(errors="replace").strip()
        process.stdout.close()
        if code == 0:
            return "ok", output or "trained"
        if code == EXIT_BUSY:
            return "busy", worker_message(log)
        if code == EXIT_FAILED:
            return "failed", worker_message(log) or f"the worker failed (log: {log})"
        return "lost", f"exit {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"

    def stop(self, handle: tuple[subprocess.Popen, Path]) -> None:
        """A stop signal to the worker, which keeps its last complete epoch; killed if it lingers.
        SIGTERM, not SIGINT: a driver started in the background (nohup, `&`) hands its workers SIGINT
        ignored, and dvae leaves an ignored signal ignored."""
        process, _ = handle
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ray_train(job: dict, token: str) -> tuple[str, str]:
    """A Ray task: train (or resume) one run, in the worker process Ray gives it. The run folder
    must be on a file system the driver shares: the suite's token file proves it, else the run is
    refused rather than trained into a folder the driver never sees."""
    folder = Path(job["folder"])
    seen = folder.parent / TOKEN
    if not seen.is_file() or seen.read_text().strip() != token:
        return "failed", (f"{folder.parent} is not the driver's output folder on this node ({os.uname().nodename}): "
                          "run folders need a file system every node shares")
    torch.set_num_threads(job["threads"])
    try:
        return "ok", ensure_trained(TrainConfig.from_dict(job["config"]), folder, Reporter())
    except FolderInUse as e:
        return "busy", str(e)
    except DVAEError as e:
        return "failed", str(e)


@dataclass
class RayRunner:
    """Each run a Ray task on the cluster at `address` ('auto', 'ray://host:10001'; None: RAY_ADDRESS;
    'local': a cluster of this machine's cores, started for the suite), asking for `threads` CPUs, or `gpu_fraction` of a
    GPU. Run folders must lie on a file system every node shares (see ray_train)."""

    address: str | None
    threads: int = 1
    gpu_fraction: float = 0.0
    retries: int = RETRIES
    poll_interval: float = 0.2
    slots: int = 0  # set from the cluster's resources when it starts

    def run(self, plan: list[PlannedRun], monitor: Monitor, reporter: Reporter) -> dict[Path, Outcome]:
        with contextlib.redirect_stdout(sys.stderr):  # Ray's own messages (a dead worker...) stay off stdout
            return self._run(import_ray(), plan, monitor)

    def _run(self, ray, plan: list[PlannedRun], monitor: Monitor) -> dict[Path, Outcome]:
        started_here = not ray.is_initialized()
        if started_here:  # 'local': a cluster of this machine alone, started here and stopped at the end
            address = None if self.address == "local" else self.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.ERROR)
        try:
            out = plan[0].folder.parent
            out.mkdir(parents=True, exist_ok=True)
            self.token = secrets.token_hex(16)
            (out / TOKEN).write_text(self.token + "\n")
            resources = ray.cluster_resources()
            if self.gpu_fraction:
                self.slots = max(1, int(resources.get("GPU", 0) / self.gpu_fraction))
            else:
                self.slots = max(1, int(resources.get("CPU", 1) // self.threads))
            self.task = ray.remote(num_cpus=0 if self.gpu_fraction else self.threads, num_gpus=self.gpu_fraction,
                                   max_retries=0)(ray_train)
            self.ray = ray
            return Dispatcher(self.slots, self.retries).run(plan, self, monitor)
        finally:
            if started_here:
                ray.shutdown()

    def launch(self, run: PlannedRun, slot: int) -> object:
        job = {"config": run.config.to_dict(), "folder": str(run.folder), "threads": self.threads}
        return self.task.remote(job, self.token)

    def poll(self, handle: object) -> tuple[str, str] | None:
        ready, _ = self.ray.wait([handle], timeout=0)
        if not ready:
            return None
        try:
            return tuple(self.ray.get(handle))
        except self.ray.exceptions.RayError as e:  # a dead worker or node: the run is dispatched again
            return "lost", type(e).__name__

    def stop(self, handle: object) -> None:
        """Kill the task's worker: the run keeps its last complete epoch (every epoch is written whole)."""
        with contextlib.suppress(Exception):
            self.ray.cancel(handle, force=True)


def import_ray():
    """Ray, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise DVAEError("a Ray cluster needs Ray: pip install 'dvae[ray]' (or pip install ray)") from None
    return ray


__all__ = ["Dispatcher", "Interrupted", "RayRunner", "Runner", "Sequential", "Workers", "default_threads",
           "ensure_trained"]
