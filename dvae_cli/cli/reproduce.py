"""`dvae reproduce`: a suite of runs (the thesis's Table 5.1, or the field's benchmark) planned,
executed by a runner (this process, local workers or a Ray cluster), and read into tables.

Owns: the terminal tables and the runner flags. Must not: train or evaluate (dvae_cli.experiments does).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Group
from rich.table import Table

from ..errors import DVAEError, Setting, SettingError
from ..experiments.reinmax import SUITE_METHODS
from ..experiments.thesis import MODELS, THESIS_MODELS, select_models, thesis_cells
from ..experiments.plan import fmt
from ..presets import PRESETS
from .common import (BINARIZE, DATA_DIR, DATASET, DEVICE, QUIET, Binarize, Dataset, data_config, data_dir_arg,
                     output_option, parse_seeds, stdout, user_errors)

app = typer.Typer()


Suite = Enum("Suite", {name: name for name in ("thesis", *PRESETS)}, type=str)


@app.command()
def reproduce(
    suite: Suite = typer.Option("thesis", help="thesis: its Table 5.1 (and more models with --methods/--all); "
                                "reinmax: the GST/ReinMax MNIST-VAE benchmark (dvae train --preset reinmax) over "
                                "--shapes x --methods (estimators) x --seeds, read at the last epoch, beside the "
                                "published per-seed records."),
    shapes: Optional[str] = typer.Option(None, help="--suite reinmax: latent shapes C x L (classes x variables), "
                                         "e.g. 10x30,8x4 (default: the reference's six)."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs per run (default: the suite's; the thesis: 50, "
                                         "reinmax: 160)."),
    seeds: str = typer.Option("0,1,2", help="Comma-separated seeds; one run per model and seed."),
    extra_seeds: Optional[str] = typer.Option(
        None, help="Seeds for the models beyond the thesis's three (default: --seeds)."),
    methods: Optional[str] = typer.Option(
        None, help=f"Comma-separated models to run (default: the thesis's three): {', '.join(MODELS)}. With "
        f"--suite reinmax, estimators (default: {', '.join(SUITE_METHODS)})."),
    all_models: bool = typer.Option(False, "--all", help="Also every other method and DTP variant."),
    output: Path = output_option("Folder of the run folders and results files (default runs/reproduce, "
                                 "runs/reproduce-SUITE).", required=False),
    workers: Optional[int] = typer.Option(None, min=1, help="Train this many runs at once on this machine, each "
                                          "in its own process (on CUDA: --runs-per-gpu on each visible GPU)."),
    threads: Optional[int] = typer.Option(None, min=1, help="CPU threads per run (default with --workers: cores / "
                                          "workers; with --ray: 1)."),
    runs_per_gpu: int = typer.Option(1, min=1, help="With --workers or --ray on CUDA: runs packed onto one GPU."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Send each run to a Ray cluster as "
                                      "a task: auto, ray://HOST:10001, 'env' for $RAY_ADDRESS, or local (a cluster of "
                                      "this machine). Run folders must be on a file system every node shares. "
                                      "Needs pip install 'dvae[ray]'."),
    parallel: int = typer.Option(1, min=1, help="In this process: train up to this many seeds of a model together "
                                 "as one batched computation (dvae train --seeds)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile each training step, as dvae train "
                                 "--compile (on a GPU with --parallel: the fast way to train seeds together)."),
    report: bool = typer.Option(False, "--report", help="Train nothing: tabulate what the run folders hold now "
                                "(finished runs, and partial ones at their last complete epoch)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Train nothing: print the plan and each run's time on "
                                 "this machine, estimated from a short measured probe."),
    iw: int = typer.Option(100, "--iw", min=1, help="K: samples of the importance-weighted log p(x) on test."),
    device: str = DEVICE,
    dataset: Dataset = DATASET,
    binarize: Binarize = BINARIZE,
    data_dir: Optional[Path] = DATA_DIR,
    train_limit: Optional[int] = typer.Option(
        None, min=1, help="Train (and evaluate train) on the first N training images only: quick runs."),
    json_out: bool = typer.Option(False, "--json", help="Print results.json on stdout instead of a table, and "
                                  "progress as JSON lines on stderr."),
    quiet: bool = QUIET,
) -> None:
    """Train a suite's runs (skipping complete ones, resuming partial ones), evaluate and tabulate them.

    Each run is a folder in the output folder; a rerun of the same command picks up where it stopped.
    A failed run is reported with its folder and message and the suite goes on. Writes
    <out>/results.json and <out>/results.md (and results.png for a benchmark suite); progress on stderr.
    """
    from ..experiments import report_plan, run_plan, thesis
    from ..experiments import reinmax as benchmark
    from ..experiments.runners import Sequential
    from ..model import ModelConfig
    from ..methods import get_method
    from ..presets import get_preset
    from ..progress import for_terminal
    from ..runfolder import RUNS
    from ..train import TrainConfig

    output = output or RUNS / ("reproduce" if suite.value == "thesis" else f"reproduce-{suite.value}")
    with user_errors():
        if suite.value == "thesis":  # every argument checked before the data set is looked at
            if shapes is not None:
                raise DVAEError("--shapes is for a benchmark suite (--suite reinmax); the thesis has one shape")
            models = select_models(_names(methods, "methods"), all_models)
            other_seeds = parse_seeds(extra_seeds) if extra_seeds is not None else parse_seeds(seeds)
            entries = [(m, parse_seeds(seeds) if m in THESIS_MODELS else other_seeds) for m in models]
            default_epochs = 50
        else:
            if all_models:
                raise DVAEError("--all is for the thesis's suite; give --methods for a benchmark suite")
            preset = get_preset(suite.value)
            shape_list = [benchmark.parse_shape(s) for s in _names(shapes, "shapes")] if shapes is not None \
                else list(preset.shapes)
            method_list = _names(methods, "methods") or list(SUITE_METHODS)
            for method in method_list:
                get_method(method)
            seed_list = parse_seeds(seeds)
            default_epochs = preset.settings["epochs"]
        runner = _runner(workers, threads, runs_per_gpu, ray, parallel, device)
        data = data_config(dataset, binarize, data_dir)
        base = TrainConfig(epochs=epochs or default_epochs, device=device, train_limit=train_limit,
                           data_dir=data_dir_arg(data_dir), compile=compile, data=data,
                           model=ModelConfig(input_size=data.pixels))
        if suite.value == "thesis":
            plan = thesis.plan_thesis(entries, output, base)
        else:
            plan = benchmark.plan_suite(shape_list, method_list, seed_list, output, base, suite.value)
        if dry_run:
            _dry_run(plan, runner, json_out)
            return
        view = "quiet" if quiet else "json" if json_out else \
            "live" if sys.stderr.isatty() and not isinstance(runner, Sequential) else "plain"
        reporter = for_terminal(quiet or json_out or view == "live")
        try:
            outcomes = report_plan(plan) if report else run_plan(plan, runner, reporter, view)
            if suite.value == "thesis":
                results = thesis.read_thesis(entries, plan, outcomes, output, base, iw, reporter)
            else:
                results = benchmark.read_suite(plan, outcomes, output, base, suite.value, reporter)
        finally:
            reporter.close()
    if json_out:
        print(json.dumps(results))
    else:
        stdout.print(tables(results) if suite.value == "thesis" else suite_table(results))
        written = ["results.json", "results.md"] + (["results.png"] if suite.value != "thesis" else [])
        stdout.print("written: " + ", ".join(str(output / name) for name in written), highlight=False)
    failed = sum(len(row.get("failed", [])) for row in results.get("rows", results.get("models", [])))
    if failed:
        raise typer.Exit(1)


def _names(text: Optional[str], setting: str) -> list[str] | None:
    """A comma-separated list, None when not given; an empty one is refused (it would mean 'all')."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise SettingError(Setting(setting), " is empty; name at least one, or leave it out for the default")
    return names


def _runner(workers: Optional[int], threads: Optional[int], runs_per_gpu: int, ray: Optional[str], parallel: int,
            device: str):
    """The runner the flags ask for: a Ray cluster, local workers, or this process."""
    from ..distributed import resolve_device
    from ..experiments.runners import RayRunner, Sequential, Workers

    if parallel > 1 and (workers or ray):
        raise SettingError(Setting("parallel"), " trains seeds together in this process; it cannot go with ",
                           Setting("workers"), " or ", Setting("ray"))
    if workers and ray:
        raise SettingError("give ", Setting("workers"), " or ", Setting("ray"), ", not both")
    cuda = resolve_device(device).type == "cuda"
    if ray is not None:
        address = os.environ.get("RAY_ADDRESS") if ray == "env" else ray
        if ray == "env" and not address:
            raise DVAEError("--ray env: RAY_ADDRESS is not set")
        return RayRunner(address, threads or 1, 1 / runs_per_gpu if cuda else 0.0)
    if workers:
        import torch
        return Workers(workers, threads, runs_per_gpu, torch.cuda.device_count() if cuda else 0)
    return Sequential(parallel, threads)


def _dry_run(plan, runner, json_out: bool) -> None:
    """The plan, each run's estimated time on this machine, and the whole suite's CPU-hours."""
    import torch
    from ..experiments.estimate import estimate_plan
    from ..experiments.runners import Sequential, default_threads

    threads = runner.threads or (default_threads(runner.slots) if hasattr(runner, "workers") else
                                 torch.get_num_threads() if isinstance(runner, Sequential) else 1)
    estimates = estimate_plan(plan, threads)
    total = sum(e.seconds for e in estimates)
    slots = getattr(runner, "slots", 1) or 1
    summary = {"runs": len(plan), "runs_left": sum(e.epochs_left > 0 for e in estimates), "threads_per_run": threads,
               "cpu_hours": total * threads / 3600, "run_hours": total / 3600, "slots": slots,
               "wall_hours_estimate": total / 3600 / slots,
               "device": "cpu" if plan[0].config.device in ("cpu", "auto") and not torch.cuda.is_available() else
               plan[0].config.device, "gpu": "unmeasured"}
    if json_out:
        print(json.dumps({"plan": [{"run": e.run.label, "folder": str(e.run.folder), "epochs_left": e.epochs_left,
                                    "seconds_per_epoch": e.seconds_per_epoch, "seconds": e.seconds}
                                   for e in estimates], "estimate": summary}))
        return
    table = Table(title=f"Plan: {len(plan)} runs, {threads} thread(s) each, times measured on this machine",
                  title_justify="left", **COMPACT)
    for column in ("run", "epochs left", "s/epoch", "hours"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for e in estimates:
        table.add_row(e.run.label, str(e.epochs_left), f"{e.seconds_per_epoch:.1f}", f"{e.seconds / 3600:.2f}")
    stdout.print(table)
    stdout.print(f"estimate: {summary['cpu_hours']:.1f} CPU-hours on this machine ({summary['run_hours']:.1f} "
                 f"run-hours; about {summary['wall_hours_estimate']:.1f} h wall with {slots} at once). "
                 "GPU time: unmeasured (only the device at hand is probed).", highlight=False)


def suite_table(results: dict) -> Table:
    """A benchmark suite's rows beside the published records: 80 columns wide."""
    table = Table(title=f"--suite {results['protocol']['suite']}: -ELBO per image after "
                        f"{results['protocol']['epochs']} epochs, mean ± sd over seeds", title_justify="left", **COMPACT)
    for column in ("shape", "method", "seeds", "epochs", "train", "test", "published train", "vs published"):
        table.add_column(column, justify="left" if column in ("shape", "method", "vs published") else "right")
    for row in results["rows"]:
        record = row.get("record")
        published = "" if not record else f"{record['train_neg_elbo']:.2f}"
        own = "*" if row.get("own_settings") is False else ""
        table.add_row(row["shape"], row["method"] + own, str(len(row["seeds"])),
                      ",".join(map(str, row.get("epochs_run", []))), fmt(row, "train_neg_elbo"),
                      fmt(row, "test_neg_elbo"), published, row.get("agreement", ""))
        for failure in row.get("failed", []):
            table.add_row("", f"seed {failure['seed']} FAILED", "", "", "", "", "", "")
    return table


COMPACT = {"box": box.SIMPLE, "pad_edge": False, "collapse_padding": True}  # fits 80 columns


def tables(results: dict) -> Group:
    """Table 5.1 beside ours (a row per model and split), then the other metrics (means only): 80 columns wide."""
    p = results["protocol"]
    comparison = Table(title=f"Reconstruction log p(x|y) per image after {p['epochs']} epochs, beside Table 5.1",
                       title_justify="left", **COMPACT)
    other = Table(title=f"Means over seeds (KL, max prob: valid; -log p(x): IW bound, K = {p['iw_samples']})",
                  title_justify="left", **COMPACT)
    for table, headers in ((comparison, ["model", "seeds", "split", "one-hot", "relaxed", "thesis", "diff"]),
                           (other, ["model", "KL", "valid -ELBO", "test -ELBO", "test -log p(x)", "max prob",
                                    "classes", "s/epoch"])):
        for name in headers:
            table.add_column(name, justify="left" if name in ("model", "split") else "right", no_wrap=name == "model")
    for row in results["models"]:
        for split in ("train", "valid"):
            first = split == "train"
            comparison.add_row(row["name"] if first else "", str(len(row["seeds"])) if first else "", split,
                               fmt(row, f"{split}_log_lik"), fmt(row, f"{split}_relaxed_log_lik"),
                               *thesis_cells(row, split), end_section=not first)
        means = [fmt(row, k, with_std=False) for k in ("valid_kl", "valid_neg_elbo", "test_neg_elbo",
                                                       "test_neg_iw_log_px")]
        other.add_row(row["name"], *means, fmt(row, "valid_mean_max_prob", 4, with_std=False),
                      fmt(row, "valid_classes_used", 2, with_std=False), fmt(row, "seconds_per_epoch", 1, with_std=False))
    return Group(comparison, other)
