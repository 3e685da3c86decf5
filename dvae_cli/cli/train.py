"""`dvae train`: a run folder from the command line; every method hyper-parameter is a flag.

Owns: the flags of training (one per field of each method's Config, spelled by commandline.py).
Must not: validate method settings itself (methods.make_method does, once) or train.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..commandline import flag, negative_flag
from ..data import ENV_UNVERIFIED
from ..errors import DVAEError
from ..interrupts import Interrupted, exit_code, signal_name
from ..methods import METHODS
from ..optim import OPTIMIZERS
from ..presets import PRESETS
from ..model import ACTIVATIONS
from .common import (seed_option, BINARIZE, DATA_DIR, DATASET, DEVICE, QUIET, Binarize, Dataset, data_config, data_dir_arg,
                     output_option, parse_seeds, stderr, user_errors)

app = typer.Typer()
Method = Enum("Method", {name: name for name in METHODS}, type=str)  # choices for --method
Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)
Activation = Enum("Activation", {name: name for name in ACTIVATIONS}, type=str)
Optimizer = Enum("Optimizer", {name: name for name in OPTIMIZERS}, type=str)


def parse_widths(text: str) -> int | tuple[int, ...]:
    """--hidden: '500' -> 500, '512,256' -> (512, 256)."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"give layer widths as integers, e.g. 500 or 512,256; got {text!r}") from None
    if any(w < 1 for w in widths):
        raise typer.BadParameter(f"layer widths must be positive, got {text!r}")
    return widths[0] if len(widths) == 1 else widths


def _method_fields() -> dict[str, tuple[dataclasses.Field, type, dict[str, object]]]:
    """Every method hyper-parameter: field, type, and its default in each method that has it."""
    fields: dict[str, tuple[dataclasses.Field, type, dict[str, object]]] = {}
    for name, cls in METHODS.items():
        hints = typing.get_type_hints(cls.Config)
        for f in dataclasses.fields(cls.Config):
            fields.setdefault(f.name, (f, hints[f.name], {}))[2][name] = f.default
    return fields


def _defaults_help(defaults: dict[str, object]) -> str:
    """'default 0.5; gumbel, st-gumbel', or per value when the methods differ."""
    by_value: dict[str, list[str]] = {}
    for method, value in defaults.items():
        by_value.setdefault(str(value), []).append(method)
    if len(by_value) == 1:
        return f"default {next(iter(by_value))}; {', '.join(defaults)}"
    return "default " + "; ".join(f"{value} for {', '.join(methods)}" for value, methods in by_value.items())


def _range_check(metadata: dict):
    """A flag's check of the range the library checks too (exit 2, before any data is read)."""
    from ..methods.base import range_problem

    def check(value):
        problem = range_problem(value, metadata) if value is not None else None
        if problem:
            raise typer.BadParameter(problem)
        return value

    return check


def with_method_options(command):
    """Add one --flag per method hyper-parameter; the command gets them as `hparams`."""
    fields = _method_fields()
    extra = []
    for name, (f, kind, defaults) in fields.items():
        decls = [f"{flag(name)}/{negative_flag(name)}"] if kind is bool else [flag(name)]
        choices = f.metadata.get("choices")
        if choices:
            kind = Enum(name, {c: c for c in choices}, type=str)
        option = typer.Option(
            None, *decls, help=f"{f.metadata.get('help', '')} ({_defaults_help(defaults)})",
            show_default=False, rich_help_panel="Method options",
            min=f.metadata.get("min"), max=f.metadata.get("max"), callback=_range_check(f.metadata),
        )
        extra.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                       annotation=Optional[kind]))
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.name != "hparams"] + extra

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = {n: kwargs.pop(n, None) for n in fields}
        hparams = {n: v.value if isinstance(v, Enum) else v for n, v in values.items() if v is not None}
        return command(**kwargs, hparams=hparams)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def check_method_settings(method: str, hparams: dict) -> None:
    """The library's one check of a method's settings, its unknown names said as flags."""
    from ..methods import UnknownSettings, make_method

    try:
        make_method(method, hparams)
    except UnknownSettings as e:
        raise DVAEError(f"{', '.join(map(flag, e.names))} do(es) not apply to {flag('method')} {method}") from None


@app.command()
@with_method_options
def train(
    ctx: typer.Context,
    method: Method = typer.Option("dtp", help="Training method: " + "; ".join(
        f"{name} = {cls.summary}" for name, cls in METHODS.items()) + "."),
    device: str = DEVICE,
    epochs: int = typer.Option(50, min=1, help="Epochs (the thesis: 50)."),
    batch_size: int = typer.Option(100, min=1, help="Batch size (the thesis: 100)."),
    lr: float = typer.Option(3e-4, min=0.0, help="Adam learning rate (the thesis: 3e-4)."),
    seed: int = seed_option("Seed for weights, shuffling and sampling"),
    seeds: Optional[str] = typer.Option(None, help="Several seeds, e.g. 0,1,2: one run each, trained together "
                                        "in one process as one batched computation, into OUT/seed-N "
                                        "(on a GPU, add --compile: docs/SPEED.md)."),
    train_limit: Optional[int] = typer.Option(None, min=1, help="Train on the first N training images only."),
    latent_vars: int = typer.Option(30, min=1, help="D: number of categorical variables."),
    classes: int = typer.Option(10, min=2, help="K: classes per variable."),
    hidden: str = typer.Option("500", help="Hidden layer widths of the encoder, input side first, e.g. 512,256 "
                               "(the decoder mirrors them)."),
    activation: Activation = typer.Option("softplus", help="Activation of the hidden layers (the thesis: softplus)."),
    optimizer: Optimizer = typer.Option("adam", help="adam (the thesis) or radam (torch.optim)."),
    dataset: Dataset = DATASET,
    binarize: Binarize = BINARIZE,
    valid_size: Optional[int] = typer.Option(None, min=0, help="Images at the end of the training file held out "
                                             "for validation (default: the data set's; 0: train on all, monitor "
                                             "the test split, keep the last epoch)."),
    preset: Optional[Preset] = typer.Option(None, help="A benchmark's protocol, its settings the defaults of "
                                            "the flags not given: " + "; ".join(
                                                f"{name} = {p.summary}" for name, p in PRESETS.items()) + "."),
    data_dir: Optional[Path] = DATA_DIR,
    unverified_data: bool = typer.Option(False, "--unverified-data", envvar=ENV_UNVERIFIED, show_envvar=True,
                                         help="Train on image files that are not the named data set's published "
                                              "ones (checked by their md5); config.json records it."),
    output: Optional[Path] = output_option("Run folder (default runs/<method>-<timestamp>).", required=False),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training step (on CUDA with "
                                 "CUDA graphs); the first epoch waits for the compiler."),
    save_every: int = typer.Option(0, min=0, help="Also keep epoch-XXXX.safetensors every N epochs (0 = only "
                                   "best and last), e.g. for dvae gradients over training."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last complete epoch "
                                          "(or the runs of a --seeds folder, together)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = QUIET,
    hparams: dict = None,
) -> None:
    """Train a discrete VAE (on MNIST thresholded at 0.5 by default); writes a run folder with config, metrics and checkpoints.

    Per-epoch lines go to stderr; the run folder's path (or --json) to stdout.
    Ctrl-C, SIGTERM or SIGHUP keeps the last complete epoch (exit 130, 143, 129); continue with
    --resume DIR. One run at a time writes a folder (a lock file, .lock, names its process).
    With --seeds, each seed's run folder is OUT/seed-N, as a single run's; their paths (or --json)
    go to stdout, one a line.
    """
    from ..distributed import is_main, resolve_device
    from ..model import ModelConfig
    from ..progress import for_terminal
    from ..multirun import resume_group, train_seeds
    from ..runfolder import default_out, group_runs, has_epoch, monitored, read_metrics
    from ..train import TrainConfig, resume as resume_run, train as train_run

    reporter = for_terminal(quiet)
    with user_errors():
        try:
            if resume is not None:
                given = {p for p in ctx.params if ctx.get_parameter_source(p).name == "COMMANDLINE"}
                if hparams or given - {"resume", "epochs", "device", "json_out", "quiet", "data_dir"}:
                    raise DVAEError("--resume continues a run with its recorded settings; "
                                    "only --epochs, --device and --data-dir may be given with it")
                changes = (epochs if "epochs" in given else None, device if "device" in given else None, reporter,
                           data_dir_arg(data_dir) if "data_dir" in given else None)
                if group_runs(resume):
                    run_dirs = resume_group(resume, *changes)
                else:
                    run_dirs = [resume_run(resume, *changes)]
            else:
                check_method_settings(method.value, hparams)
                widths = parse_widths(hidden)
                resolve_device(device)  # before the data is looked for
                data = data_config(dataset, binarize, data_dir, valid_size)
                config = TrainConfig(
                    method=method.value, hparams=hparams, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, train_limit=train_limit, device=device, data_dir=data_dir_arg(data_dir), save_every=save_every,
                    compile=compile, optimizer=optimizer.value, data=data, unverified_data=unverified_data,
                    model=ModelConfig(latent_vars=latent_vars, classes=classes, hidden=widths,
                                      input_size=data.pixels, activation=activation.value),
                )
                if preset is not None:
                    from ..presets import apply_preset

                    given = {p for p in ctx.params if ctx.get_parameter_source(p).name == "COMMANDLINE"}
                    config = apply_preset(config, preset.value, given | set(hparams))
                output = output or default_out(config.method)
                if seeds is not None:
                    if ctx.get_parameter_source("seed").name == "COMMANDLINE":
                        raise DVAEError("give --seed for one run or --seeds for several, not both")
                    run_dirs = train_seeds(config, parse_seeds(seeds), output, reporter)
                else:
                    run_dirs = [train_run(config, output, reporter)]
        except (KeyboardInterrupt, Interrupted) as e:
            reporter.close()
            folder = resume or output
            if folder is not None and any(has_epoch(run) for run in group_runs(folder) or [folder]):
                stderr.print(f"[yellow]interrupted[/] ({signal_name(e)}): the last complete epoch is kept; "
                             f"continue with: dvae train --resume {folder}", soft_wrap=True, highlight=False)
            else:
                stderr.print(f"[yellow]interrupted[/] ({signal_name(e)}) before the first epoch completed, so there "
                             "is nothing to resume and nothing was kept; run the same command to start again",
                             soft_wrap=True, highlight=False)
            raise typer.Exit(exit_code(e)) from None
        finally:
            reporter.close()
    if not is_main():  # under torchrun, rank 0 alone reports
        return
    for run_dir in run_dirs:
        metrics = read_metrics(run_dir)
        if json_out:  # one JSON object a line, one line a run
            best = min(metrics, key=lambda m: monitored(m, "neg_elbo")) if metrics else None
            print(json.dumps({"run": str(run_dir), "epochs": len(metrics), "best": best,
                              "last": metrics[-1] if metrics else None}))
        else:
            print(run_dir)
