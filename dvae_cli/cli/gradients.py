"""`dvae gradients`: each method's encoder update against the true -ELBO gradient, as a table,
JSON or a figure.

Owns: the tables. Must not: measure anything (gradients.py does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich import box
from rich.table import Table

from .common import (seed_option, CKPT, DATA_DIR, DEVICE, JSON, QUIET, Split, check_output, checkpoint, data_dir_arg, output_option, stdout,
                     user_errors)
from ..errors import DVAEError
from ..terminal import shown
from ..methods import METHODS
from ..pretrained import NAMES as PRETRAINED_NAMES


app = typer.Typer()

def _method_names(spec: Optional[str]) -> list[str]:
    if spec is None:
        return list(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise DVAEError(f"--methods {spec}: choose a comma-separated list of {', '.join(METHODS)}")
    return names


def _number(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.2f}"


def report_table(report) -> Table:
    """One checkpoint's comparison as a Rich table."""
    ref = report.reference
    schedules = "; ".join(f"{c.method} " + " ".join(f"{k} {v:.3g}" for k, v in c.schedule.items() if k != "lr_scale")
                          for c in report.comparisons if set(c.schedule) - {"lr_scale"})
    schedules = f" ({schedules})" if schedules else ""
    table = Table(
        title=f"{shown(report.checkpoint)} ({shown(report.method)}, epoch {report.epoch}): encoder updates on {report.images} "
              f"images vs the -ELBO gradient (reference: {ref['samples']:,} samples/image, relative "
              f"standard error {ref['relative_standard_error']:.3f}, norm {ref['norm']:.3g} of which KL "
              f"{ref['kl_norm']:.3g} and reconstruction {ref['reconstruction_norm']:.3g}; {ref['seconds']:.0f} s)",
        title_justify="left",
        caption=f"{report.comparisons[0].repeats if report.comparisons else 0} draws per method{schedules}. "
                "cos: of the mean update with the reference; rec: the same for the reconstruction parts (the exact KL "
                "gradient left out; dtp's whole update); 10%, 50%, 90%: quantiles of one draw's cosine with the reference. "
                "std (of one draw), |m-ref| (mean update - reference), floor, bias: relative to ||reference||; "
                "floor: what |m-ref| would be for an unbiased method (noise of the draws and of the reference); "
                "bias: sqrt(|m-ref|^2 - floor^2). SNR: ||mean|| / sqrt(trace Cov). dtp's update is not an ELBO "
                "gradient: only its directions and SNR compare.",
        box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False,
        caption_justify="left",
    )
    for name in ("method", "cos", "rec", "10%", "50%", "90%", "SNR", "std", "|m-ref|", "floor", "bias"):
        table.add_column(name, justify="left" if name == "method" else "right", no_wrap=True)
    for c in report.comparisons:
        q = c.draw_cosines  # 10%, 50%, 90%
        table.add_row(c.method, *(f"{v:.2f}" for v in (c.cosine, c.reconstruction_cosine, *q.values(), c.snr)),
                      *map(_number, (c.relative_std, c.relative_bias, c.bias_noise_floor, c.bias)))
    return table


@app.command()
def gradients(
    ckpts: Optional[List[str]] = typer.Argument(None, metavar="CKPT...", help="Checkpoint files or run folders "
                                                "(their best checkpoint), or " f"{PRETRAINED_NAMES}; several (e.g. "
                                                "a run's epoch-*.safetensors from --save-every) make the "
                                                "over-training figure. Default: --ckpt."),
    ckpt: Optional[str] = CKPT,
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods to measure (default all: "
                                          f"{','.join(METHODS)})."),
    batch: int = typer.Option(100, min=1, help="Images in the fixed batch: the first N of --split."),
    split: Split = typer.Option("train", help="Split of the checkpoint's data set the batch comes from."),
    reference_samples: int = typer.Option(2000, min=40, help="S: samples per image for the reference's "
                                          "reconstruction term (its standard error falls as 1/sqrt(S))."),
    repeats: int = typer.Option(20, min=2, help="R: draws of each method's update, each with new noise."),
    tau: Optional[float] = typer.Option(None, min=1e-6, help="Temperature of gumbel and st-gumbel (default: "
                                        "their schedule at the checkpoint's epoch)."),
    seed: int = seed_option("Seed of the reference's samples and of the methods' noise"),
    out: Optional[Path] = output_option("Also write a figure (.png, .svg, .pdf): bias against std for one "
                                        "checkpoint, alignment against epoch for several.", required=False),
    json_out: bool = JSON,
    device: str = DEVICE,
    data_dir: Optional[Path] = DATA_DIR,
    quiet: bool = QUIET,
) -> None:
    """How well each method's encoder update agrees with the true gradient of the -ELBO.

    On one fixed batch: the reference gradient w.r.t. the encoder's parameters (exact KL term,
    score-function estimate of the reconstruction term with a leave-one-out baseline), then R draws
    of each method's update (the gradient of its training loss, as the optimizer gets it). Per
    method: alignment (cosines), signal-to-noise ratio, spread and bias. See docs/GRADIENTS.md.
    """
    from ..checkpoint import load_checkpoint
    from ..data import load_split
    from ..distributed import resolve_device
    from ..figures import output_format, save_figure
    from ..gradients import estimators, measure, reports_figure
    from ..progress import for_terminal

    with user_errors():
        names = _method_names(methods)
        if out is not None:
            output_format(out)  # a bad suffix fails before the work
        dev = resolve_device(device)
        ckpts = ckpts or [str(checkpoint(None, ckpt))]  # none given: --ckpt, $DVAE_CKPT, the newest run...
        checkpoints = [load_checkpoint(c, dev) for c in ckpts]  # a wrong path fails before the work
        if out is not None:  # the checkpoints and the split files they read are inputs
            from ..data import split_file

            check_output(out, *(c.path for c in checkpoints),
                         *{split_file(split.value, data_dir_arg(data_dir), c.data) for c in checkpoints},
                         data_dir=data_dir_arg(data_dir))
        batches = {c.data: load_split(split.value, data_dir_arg(data_dir), batch, dev, c.data) for c in checkpoints}
        reporter = for_terminal(quiet)
        reports = []
        try:
            for name, loaded in zip(ckpts, checkpoints):
                reports.append(measure(loaded, batches[loaded.data], estimators(loaded, names, tau), reference_samples,
                                       repeats, seed, reporter, label=str(name)))
        finally:
            reporter.close()
        if out is not None:
            fig = reports_figure(reports)
            save_figure(fig, out)
    if json_out:
        print(json.dumps({"split": split.value, "seed": seed, "reports": [r.to_dict() for r in reports]}))
        return
    for report in reports:
        stdout.print(report_table(report))
    if out is not None:
        print(out)
