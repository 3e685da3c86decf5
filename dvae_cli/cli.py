"""The `dvae` command line: a thin layer over the Python API."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from . import __version__
from .cli_common import DATA_DIR_HELP, Split, stderr, stdout, user_errors
from .errors import DVAEError
from .methods import METHODS
from .model import ModelConfig
from .pretrained import NAMES as PRETRAINED_NAMES

Method = Enum("Method", {name: name for name in METHODS}, type=str)  # choices for --method

app = typer.Typer(
    help="Variational autoencoders with a discrete (one-hot categorical) latent space on binarized "
    "MNIST: train with difference target propagation or Gumbel-Softmax, evaluate, use the codes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
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


def with_method_options(command):
    """Add one --flag per method hyper-parameter; the command gets them as `hparams`."""
    fields = _method_fields()
    extra = []
    for name, (f, kind, defaults) in fields.items():
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        choices = f.metadata.get("choices")
        if choices:
            kind = Enum(name, {c: c for c in choices}, type=str)
        option = typer.Option(
            None, *decls, help=f"{f.metadata.get('help', '')} ({_defaults_help(defaults)})",
            show_default=False, rich_help_panel="Method options",
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


def _check_hparams(method: str, hparams: dict) -> None:
    """A flag of another method is a mistake worth saying."""
    own = {f.name for f in dataclasses.fields(METHODS[method].Config)}
    foreign = [n for n in hparams if n not in own]
    if foreign:
        flags = ", ".join("--" + n.replace("_", "-") for n in foreign)
        raise DVAEError(f"{flags} do(es) not apply to --method {method}")


def version_callback(value: bool) -> None:
    if value:
        print(f"dvae {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """dvae: discrete-latent VAEs."""


@app.command()
@with_method_options
def train(
    ctx: typer.Context,
    method: Method = typer.Option("dtp", help="Training method: " + "; ".join(
        f"{name} = {cls.summary}" for name, cls in METHODS.items()) + "."),
    device: str = typer.Option("auto", help="auto (cuda when available), cpu, cuda or mps."),
    epochs: int = typer.Option(50, min=0, help="Epochs (the thesis: 50)."),
    batch_size: int = typer.Option(100, min=1, help="Batch size (the thesis: 100)."),
    lr: float = typer.Option(3e-4, min=0.0, help="Adam learning rate (the thesis: 3e-4)."),
    seed: int = typer.Option(0, help="Seed for weights, shuffling and sampling."),
    train_limit: Optional[int] = typer.Option(None, min=1, help="Train on the first N training images only."),
    latent_vars: int = typer.Option(30, min=1, help="D: number of categorical variables."),
    classes: int = typer.Option(10, min=2, help="K: classes per variable."),
    hidden: int = typer.Option(500, min=1, help="Hidden units of encoder and decoder."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<method>-<timestamp>)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this folder from its last complete epoch."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the training step (on CUDA with "
                                 "CUDA graphs); the first epoch waits for the compiler."),
    hparams: dict = None,
) -> None:
    """Train a discrete VAE on MNIST; writes a run folder with config, metrics and checkpoints.

    Per-epoch lines go to stderr; the run folder's path (or --json) to stdout.
    Ctrl-C keeps the last complete epoch (exit 130); continue with --resume DIR.
    """
    from .distributed import is_main
    from .progress import for_terminal
    from .train import TrainConfig, default_out, read_metrics, resume as resume_run, train as train_run

    reporter = for_terminal(quiet)
    with user_errors():
        try:
            if resume is not None:
                given = {p for p in ctx.params if ctx.get_parameter_source(p).name == "COMMANDLINE"}
                if hparams or given - {"resume", "epochs", "device", "json_out", "quiet", "data_dir"}:
                    raise DVAEError("--resume continues a run with its recorded settings; "
                                    "only --epochs, --device and --data-dir may be given with it")
                run_dir = resume_run(resume, epochs if "epochs" in given else None,
                                     device if "device" in given else None, reporter,
                                     str(data_dir) if data_dir else None)
            else:
                _check_hparams(method.value, hparams)
                config = TrainConfig(
                    method=method.value, hparams=hparams, epochs=epochs, batch_size=batch_size, lr=lr,
                    seed=seed, train_limit=train_limit, device=device, compile=compile,
                    data_dir=str(data_dir) if data_dir else None,
                    model=ModelConfig(latent_vars=latent_vars, classes=classes, hidden=hidden),
                )
                out = out or default_out(config.method)
                run_dir = train_run(config, out, reporter)
        except KeyboardInterrupt:
            reporter.close()
            stderr.print(f"[yellow]interrupted:[/] the last complete epoch is kept; "
                         f"continue with: dvae train --resume {resume or out}", soft_wrap=True)
            raise typer.Exit(130) from None
        finally:
            reporter.close()
    if not is_main():  # under torchrun, rank 0 alone reports
        return
    metrics = read_metrics(run_dir)
    if json_out:
        best = min(metrics, key=lambda m: m["valid_neg_elbo"]) if metrics else None
        print(json.dumps({"run": str(run_dir), "epochs": len(metrics), "best": best,
                          "last": metrics[-1] if metrics else None}))
    else:
        print(run_dir)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else str(value)


@app.command("eval")
def eval_command(
    ckpt: Path = typer.Argument(..., help="Checkpoint file, run folder (then its best checkpoint), or "
                                f"{PRETRAINED_NAMES} (shipped with dvae)."),
    split: Split = typer.Option("valid", help="Data split."),
    iw: int = typer.Option(100, "--iw", min=0, help="Samples for the importance-weighted log p(x) (0 = skip); "
                    "100 takes about 40 s of one CPU core on the 10k valid split."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    data_dir: Optional[Path] = typer.Option(None, help=DATA_DIR_HELP),
    seed: int = typer.Option(0, help="Seed for the one-hot samples."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate the first N images of the split only."),
) -> None:
    """Evaluate a checkpoint with exact one-hot samples: log p(x|y), KL, ELBO, IW log p(x), code use."""
    from .checkpoint import load_checkpoint
    from .data import load_split
    from .evaluate import evaluate
    from .progress import for_terminal
    from .train import resolve_device

    with user_errors():
        dev = resolve_device(device)
        ckpt_info = load_checkpoint(ckpt, dev)
        data = load_split(split.value, str(data_dir) if data_dir else None, limit, dev)
        reporter = for_terminal(quiet=json_out and not sys.stderr.isatty())
        reporter.task("eval", f"evaluating {split.value}", len(data))
        try:
            result = evaluate(ckpt_info.model, data, iw_samples=iw, seed=seed,
                              on_batch=lambda n: reporter.advance("eval", n))
        finally:
            reporter.close()
    result = {"checkpoint": str(ckpt_info.path), "method": ckpt_info.method, "epoch": ckpt_info.epoch,
              "split": split.value, "seed": seed, **result}
    if json_out:
        print(json.dumps(result))
        return
    table = Table(title=f"{ckpt_info.path} ({ckpt_info.method}, epoch {ckpt_info.epoch}) on {split.value}, "
                        f"{result['images']} images", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("log p(x|y)  (one-hot sample; Table 5.1)", _fmt(result["log_lik"]))
    table.add_row("KL(q(y|x) || uniform)", _fmt(result["kl"]))
    table.add_row("-ELBO", _fmt(result["neg_elbo"]))
    if "iw_log_px" in result:
        table.add_row(f"-log p(x)  (IW, {result['iw_samples']} samples)", _fmt(-result["iw_log_px"]))
    table.add_row("mean max-probability of pi", f"{result['mean_max_prob']:.4f}")
    table.add_row("perplexity per variable (min / mean / max)",
                  f"{result['perplexity_min']:.2f} / {result['perplexity_mean']:.2f} / {result['perplexity_max']:.2f}")
    stdout.print(table)


# Subcommands defined in other modules register here, one line each.
from . import cli_reproduce  # noqa: E402
app.command(rich_help_panel="Experiments")(cli_reproduce.reproduce)
from . import cli_codes  # noqa: E402
app.command(rich_help_panel="Codes")(cli_codes.encode)
app.command(rich_help_panel="Codes")(cli_codes.decode)
from . import cli_scale  # noqa: E402
app.command(rich_help_panel="Codes")(cli_scale.cat)
from . import cli_figures  # noqa: E402
app.command(rich_help_panel="Figures")(cli_figures.heatmap)
app.command(rich_help_panel="Figures")(cli_figures.recon)
app.command(rich_help_panel="Figures")(cli_figures.samples)
app.command(rich_help_panel="Figures")(cli_figures.traverse)
app.command(rich_help_panel="Figures")(cli_figures.plot)


def run() -> None:
    """Console-script entry point."""
    app()
