"""`dvae eval`: a checkpoint's metrics with exact one-hot samples, as a table or JSON.

Owns: the table. Must not: compute a metric (evaluate.py does).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import terminal
from .common import (seed_option, CKPT, CKPT_ARG, DATA_DIR, DEVICE, QUIET, Split, checkpoint, checkpoint_name, data_dir_arg,
                     stdout, user_errors)

app = typer.Typer()


def _fmt(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else str(value)


@app.command("eval")
def eval_command(
    ckpt_arg: Optional[str] = CKPT_ARG,
    ckpt: Optional[str] = CKPT,
    split: Split = typer.Option("valid", help="Data split."),
    iw: int = typer.Option(100, "--iw", min=0, help="Samples for the importance-weighted log p(x) (0 = skip); "
                    "100 takes about 40 s of one CPU core on the 10k valid split."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = DEVICE,
    data_dir: Optional[Path] = DATA_DIR,
    seed: int = seed_option("Seed for the one-hot samples"),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate the first N images of the split only."),
    quiet: bool = QUIET,
) -> None:
    """Evaluate a checkpoint with exact one-hot samples: log p(x|y), KL, ELBO, IW log p(x), code use."""
    from ..checkpoint import load_checkpoint
    from ..data import load_split
    from ..distributed import resolve_device
    from ..evaluate import evaluate
    from ..progress import for_terminal

    with user_errors():
        dev = resolve_device(device)
        path = checkpoint(ckpt_arg, ckpt)
        loaded = load_checkpoint(path, dev)
        data = load_split(split.value, data_dir_arg(data_dir), limit, dev, loaded.data)
        if not loaded.data.is_binary and iw:
            iw = 0  # no likelihood of a discrete image to bound: the table says so
        reporter = for_terminal(quiet=quiet or json_out and not sys.stderr.isatty())
        reporter.task("eval", f"evaluating {split.value}", len(data))
        try:
            result = evaluate(loaded.model, data, iw_samples=iw, seed=seed,
                              on_batch=lambda n: reporter.advance("eval", n))
        finally:
            reporter.close()
    name = checkpoint_name(ckpt_arg if ckpt_arg is not None else ckpt, loaded.path)
    result = {"checkpoint": name, "method": loaded.method, "epoch": loaded.epoch,
              "split": split.value, "seed": seed, "data": loaded.data.to_dict(), **result}
    if json_out:
        print(json.dumps(result))
        return
    shown = escape(f"{terminal.shown(name)} ({terminal.shown(loaded.method)}, epoch {loaded.epoch})")  # from files
    table = Table(title=f"{shown} on {split.value}, "
                        f"{result['images']} images of {loaded.data.label}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("log p(x|y)  (one-hot sample; Table 5.1)", _fmt(result["log_lik"]))
    table.add_row("KL(q(y|x) || uniform)", _fmt(result["kl"]))
    table.add_row("-ELBO" if loaded.data.is_binary else "-ELBO  (grey-scale targets: not a bound on a likelihood)",
                  _fmt(result["neg_elbo"]))
    if "iw_log_px" in result:
        table.add_row(f"-log p(x)  (IW, {result['iw_samples']} samples)", _fmt(-result["iw_log_px"]))
    table.add_row("mean max-probability of pi", f"{result['mean_max_prob']:.4f}")
    table.add_row("perplexity per variable (min / mean / max)",
                  f"{result['perplexity_min']:.2f} / {result['perplexity_mean']:.2f} / {result['perplexity_max']:.2f}")
    stdout.print(table)
    if not loaded.data.is_binary:
        stdout.print("binarize none: the targets are grey values, so there is no likelihood of a discrete image "
                     "to bound and no IW log p(x).", soft_wrap=True)
