"""`dvae reproduce`: the thesis's Table 5.1 (and every other method) trained, evaluated and compared.

Owns: the terminal tables. Must not: train or evaluate (reproduce.py does).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Group
from rich.table import Table

from ..benchmark import SUITE_METHODS
from ..presets import PRESETS
from ..errors import DVAEError
from ..reproduce import MODELS, THESIS_MODELS, fmt, select_models, thesis_cells
from .common import (BINARIZE, DATA_DIR, DATASET, DEVICE, QUIET, Binarize, Dataset, data_config, data_dir_arg,
                     parse_seeds,
                     output_option, stdout, user_errors)

app = typer.Typer()


Suite = Enum("Suite", {name: name for name in ("thesis", *PRESETS)}, type=str)


@app.command()
def reproduce(
    suite: Suite = typer.Option("thesis", help="thesis: its Table 5.1 (and more models with --methods/--all); "
                                "reinmax: the GST/ReinMax MNIST-VAE benchmark (dvae train --preset reinmax) over "
                                "--shapes x --methods (estimators) x --seeds, read at the last epoch."),
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
    output: Path = output_option("Folder of the run folders and results files (default runs/reproduce).",
                                 required=False),
    parallel: int = typer.Option(1, min=1, help="Train up to this many seeds of a model together, in one "
                                 "process as one batched computation (dvae train --seeds)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile each training step, as dvae train "
                                 "--compile (on a GPU with --parallel: the fast way to train seeds together)."),
    iw: int = typer.Option(100, "--iw", min=1, help="K: samples of the importance-weighted log p(x) on test."),
    device: str = DEVICE,
    dataset: Dataset = DATASET,
    binarize: Binarize = BINARIZE,
    data_dir: Optional[Path] = DATA_DIR,
    train_limit: Optional[int] = typer.Option(
        None, min=1, help="Train (and evaluate train) on the first N training images only: quick runs."),
    json_out: bool = typer.Option(False, "--json", help="Print results.json on stdout instead of a table."),
    quiet: bool = QUIET,
) -> None:
    """Train the thesis's three models over seeds, evaluate them and compare with its Table 5.1.

    Each run folder <out>/<model>-seed<k> is skipped when complete and resumed when partial.
    Writes <out>/results.json and <out>/results.md; progress goes to stderr.
    """
    from ..progress import for_terminal
    from ..reproduce import reproduce as run_all
    from ..runfolder import RUNS
    from ..model import ModelConfig
    from ..train import TrainConfig

    output = output or RUNS / ("reproduce" if suite.value == "thesis" else f"reproduce-{suite.value}")
    if suite.value != "thesis":
        _suite(suite.value, shapes, epochs, seeds, methods, all_models, output, parallel, compile, device, dataset,
               binarize, data_dir, train_limit, json_out, quiet)
        return
    epochs = epochs or 50
    with user_errors():
        if shapes is not None:
            raise DVAEError("--shapes is for a benchmark suite (--suite reinmax); the thesis has one shape")
        names = methods.split(",") if methods is not None else None
        models = select_models(names, all_models)
        thesis_seeds = parse_seeds(seeds)
        other_seeds = parse_seeds(extra_seeds) if extra_seeds is not None else thesis_seeds
        plan = [(m, thesis_seeds if m in THESIS_MODELS else other_seeds) for m in models]
        data = data_config(dataset, binarize, data_dir)
        base = TrainConfig(epochs=epochs, device=device, train_limit=train_limit, data_dir=data_dir_arg(data_dir),
                           compile=compile, data=data, model=ModelConfig(input_size=data.pixels))
        reporter = for_terminal(quiet)
        try:
            results = run_all(plan, output, base, iw, reporter, parallel)
        finally:
            reporter.close()
    if json_out:
        print(json.dumps(results))
        return
    stdout.print(tables(results))
    stdout.print(f"written: {output / 'results.json'}, {output / 'results.md'}", highlight=False)


def _suite(name: str, shapes: Optional[str], epochs: Optional[int], seeds: str, methods: Optional[str],
           all_models: bool, output: Path, parallel: int, compile: bool, device: str, dataset, binarize,
           data_dir: Optional[Path], train_limit: Optional[int], json_out: bool, quiet: bool) -> None:
    """dvae reproduce --suite NAME: a benchmark suite (benchmark.py)."""
    from ..benchmark import parse_shape, reproduce_suite
    from ..model import ModelConfig
    from ..presets import get_preset
    from ..progress import for_terminal
    from ..train import TrainConfig

    with user_errors():
        if all_models:
            raise DVAEError("--all is for the thesis's suite; give --methods for a benchmark suite")
        preset = get_preset(name)
        shape_list = [parse_shape(s) for s in shapes.split(",")] if shapes else list(preset.shapes)
        method_list = methods.split(",") if methods else list(SUITE_METHODS)
        data = data_config(dataset, binarize, data_dir)
        base = TrainConfig(epochs=epochs or preset.settings["epochs"], device=device, train_limit=train_limit,
                           data_dir=data_dir_arg(data_dir), compile=compile, data=data,
                           model=ModelConfig(input_size=data.pixels))
        reporter = for_terminal(quiet)
        try:
            results = reproduce_suite(shape_list, method_list, parse_seeds(seeds), output, base, name, reporter,
                                      parallel)
        finally:
            reporter.close()
    if json_out:
        print(json.dumps(results))
        return
    table = Table(title=f"--suite {name}: -ELBO per image after {results['protocol']['epochs']} epochs, "
                        "mean ± sd over seeds", title_justify="left", **COMPACT)
    for column in ("shape", "method", "seeds", "train", "test", "train (one-hot)", "classes", "s/epoch"):
        table.add_column(column, justify="left" if column in ("shape", "method") else "right")
    for row in results["rows"]:
        table.add_row(row["shape"], row["method"], str(len(row["seeds"])), fmt(row, "train_neg_elbo"),
                      fmt(row, "test_neg_elbo"), fmt(row, "train_neg_elbo_onehot"),
                      fmt(row, "test_classes_used"), fmt(row, "seconds_per_epoch", 1))
    stdout.print(table)
    stdout.print(f"written: {output / 'results.json'}, {output / 'results.md'}, {output / 'results.png'}",
                 highlight=False)


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
