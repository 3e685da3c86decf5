"""`dvae heatmap`, `recon`, `samples`, `traverse` and `plot`: what a model learned, as figures.

Owns: the flags of the figure commands and the terminal heatmap. Must not: draw a figure
(figures.py does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import typer
from rich.color import Color
from rich.style import Style
from rich.text import Text

from ..errors import DVAEError
from ..terminal import shown
from .common import (seed_option, CKPT, CKPT_ARG, DATA_DIR, DEVICE, QUIET, Split, check_output, check_stdin, checkpoint,
                     checkpoint_name, data_dir_arg, output_option, stdout, user_errors)

if TYPE_CHECKING:
    from torch import Tensor

    from ..checkpoint import Checkpoint
    from ..data import DataConfig

app = typer.Typer()
INPUT_OPT = typer.Option(None, "--input", metavar="FILE",
                         help="Take the images from FILE (as `dvae encode` reads it; '-' = stdin) "
                              "instead of a split of the data set the checkpoint learned.")
SPLIT_OPT = typer.Option(None, help="Split of the checkpoint's data set to take the images from (default valid).")
SCALE_OPT = typer.Option(2, min=1, max=8, help="Screen pixels per image pixel (no smoothing).")
FIGURE_OPT = output_option("Figure file to write: .png, .svg or .pdf.")
SHADES = " ░▒▓█"  # pi in [0, .2), [.2, .4), ... when the terminal shows no colour


def _images(input: Optional[str], split: Optional[Split], data_dir: Optional[Path],
            index: int, count: Optional[int], data: DataConfig, output: Optional[Path]) -> tuple[Tensor, str]:
    """Up to `count` images (all when None) from `index` on, from --input FILE or a split of the
    data set `data`, as its targets (n, pixels); and the source's name. The split's file is an input
    too: an `output` that is it is refused before anything is written."""
    if input is not None:
        if split is not None:
            raise DVAEError("give either --input or --split, not both")
        check_stdin(input, "--input")
        from ..inputs import read_images

        images, source = read_images(input, data=data), "stdin" if input == "-" else Path(input).name
    else:
        from ..data import load_images, split_file

        source = (split or Split.valid).value
        if output is not None:
            check_output(output, split_file(source, data_dir_arg(data_dir), data), data_dir=data_dir_arg(data_dir))
        images = load_images(source, data_dir_arg(data_dir), data)
    if not len(images):
        raise DVAEError(f"{source} has no images")
    if index >= len(images):
        raise DVAEError(f"--index {index} is out of range: {source} has {len(images)} images "
                        f"(0-{len(images) - 1})")
    chosen = images[index:] if count is None else images[index : index + count]
    if input is None:
        from ..data import targets

        chosen = targets(chosen, data)
    return chosen, source


def _label(ckpt: Checkpoint) -> str:
    """'folder/file (method, epoch N)': names a checkpoint in titles."""
    return f"{shown(ckpt.path.parent.name)}/{shown(ckpt.path.name)} ({shown(ckpt.method)}, epoch {ckpt.epoch})"


def _checked(output: Optional[Path], *inputs: Optional[str | Path], data_dir: Optional[Path] = None) -> None:
    """Before any work: a figure format dvae writes, and an output that can be written and is
    none of the inputs nor a data set's file."""
    from ..figures import output_format

    if output is not None:
        output_format(output)
        check_output(output, *inputs, data_dir=data_dir_arg(data_dir))


def _load(path: Path, device: str) -> Checkpoint:
    """The checkpoint's model on the device."""
    from ..checkpoint import load_checkpoint
    from ..distributed import resolve_device

    return load_checkpoint(path, resolve_device(device))


def _device(loaded: Checkpoint) -> object:
    """Where the model is: the images go there."""
    return next(loaded.model.parameters()).device


def _write(fig, out: Path, quiet: bool) -> None:
    from ..figures import save_figure

    save_figure(fig, out)
    if not quiet:
        print(out)


def heatmap_text(pi: np.ndarray, values: bool, color: bool) -> Text:
    """pi (D, K) for the terminal: a row per variable, a cell per class, coloured like the
    figures' colormap (shade characters without colour); `values` prints the probabilities."""
    import matplotlib

    from ..figures import HEATMAP_CMAP

    cmap = matplotlib.colormaps[HEATMAP_CMAP]
    width = 5 if values else 3

    def cell(p: float) -> Text:
        shown = f" {p:.2f}" if values else " " + SHADES[min(int(p * len(SHADES)), len(SHADES) - 1)] * 2
        if not color:
            return Text(shown)
        r, g, b, _ = cmap(p, bytes=True)
        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 128 else "white"
        return Text(shown if values else " " * width,
                    Style(bgcolor=Color.from_rgb(int(r), int(g), int(b)), color=ink))

    text = Text("var\\class" + "".join(f"{k:^{width}}" for k in range(pi.shape[1])) + "\n")
    for d, row in enumerate(pi):
        text.append(f"{d:>8} ")
        for p in row:
            text.append_text(cell(float(p)))
        text.append("\n")
    if color:
        text.append(f"{'scale':>8} 0 ")
        for p in np.linspace(0, 1, 11):
            text.append_text(Text("  ", Style(bgcolor=Color.from_rgb(*map(int, cmap(p, bytes=True)[:3])))))
        text.append(" 1")
    elif not values:
        text.append(f"{'scale':>8} " + "  ".join(f"{s * 2}<{(i + 1) / len(SHADES):.1f}"
                                                   for i, s in enumerate(SHADES[:-1])) + f"  {SHADES[-1] * 2}")
    return text


@app.command()
def heatmap(
    ckpt_arg: Optional[str] = CKPT_ARG,
    ckpt: Optional[str] = CKPT,
    input: Optional[str] = INPUT_OPT,
    index: Optional[int] = typer.Option(None, min=0, help="Which image (0-based; default 0)."),
    mean: bool = typer.Option(False, "--mean", help="Average pi over all images of the split (or FILE)."),
    split: Optional[Split] = SPLIT_OPT,
    values: bool = typer.Option(False, "--values", help="Print the probabilities in the cells."),
    output: Optional[Path] = output_option("Write a figure instead: .png, .svg or .pdf.", required=False),
    json_out: bool = typer.Option(False, "--json", help="Print the matrix as JSON instead."),
    data_dir: Optional[Path] = DATA_DIR,
    device: str = DEVICE,
    quiet: bool = QUIET,
) -> None:
    """Show pi = q(y|x), the encoder's 30x10 probabilities (thesis Figure 5.1).

    For one image (default: the first validation image) or averaged over a split (--mean).
    Draws in the terminal, or writes a figure with -o, or prints JSON with --json.
    """
    from ..figures import encode_pi, heatmap_figure, save_figure

    with user_errors():
        if mean and index is not None:
            raise DVAEError("--mean averages over all images; --index does not apply")
        path = checkpoint(ckpt_arg, ckpt)
        _checked(output, path, input, data_dir=data_dir)
        loaded = _load(path, device)
        index = None if mean else index or 0
        x, source = _images(input, split, data_dir, index or 0, None if mean else 1, loaded.data, output)
        pi = encode_pi(loaded.model, x.to(_device(loaded)))
        if mean:
            pi, what = pi.mean(axis=0), f"mean over {len(x)} {source} images"
        else:
            pi, what = pi[0], f"{source} image {index}"
        if output is not None:
            save_figure(heatmap_figure(pi, f"pi = q(y|x), {what}\n{_label(loaded)}", values), output)
    if json_out:
        name = checkpoint_name(ckpt_arg if ckpt_arg is not None else ckpt, loaded.path)
        print(json.dumps({"checkpoint": name, "method": loaded.method, "epoch": loaded.epoch,
                          "source": input if input is not None else source, "index": index,
                          "images": len(x), "pi": pi.tolist()}))
    elif output is not None:
        if not quiet:
            print(output)
    else:
        stdout.print(Text(f"pi = q(y|x), {shown(what)}\n{_label(loaded)}\n"), soft_wrap=True)
        stdout.print(heatmap_text(pi, values, stdout.color_system is not None), soft_wrap=True)


@app.command()
def recon(
    ckpt_arg: Optional[str] = CKPT_ARG,
    ckpt: Optional[str] = CKPT,
    output: Path = FIGURE_OPT,
    n: int = typer.Option(10, "-n", min=1, max=1000, help="Number of images."),
    index: int = typer.Option(0, min=0, help="First image (0-based)."),
    input: Optional[str] = INPUT_OPT,
    split: Optional[Split] = SPLIT_OPT,
    columns: int = typer.Option(10, min=1, help="Images per row."),
    scale: int = SCALE_OPT,
    data_dir: Optional[Path] = DATA_DIR,
    device: str = DEVICE,
    quiet: bool = QUIET,
) -> None:
    """Figure: input images above their reconstructions (thesis Figure 5.2).

    Each reconstruction shows the Bernoulli means decoded from the image's most likely one-hot code.
    """
    from ..figures import reconstruct, reconstructions_figure

    with user_errors():
        path = checkpoint(ckpt_arg, ckpt)
        _checked(output, path, input, data_dir=data_dir)
        loaded = _load(path, device)
        x, source = _images(input, split, data_dir, index, n, loaded.data, output)
        title = f"Reconstructions of {source} images {index}-{index + len(x) - 1}\n{_label(loaded)}"
        _write(reconstructions_figure(x.numpy(), reconstruct(loaded.model, x.to(_device(loaded))), title, columns, scale,
                                      loaded.data.shape), output, quiet)


@app.command()
def samples(
    ckpt_arg: Optional[str] = CKPT_ARG,
    ckpt: Optional[str] = CKPT,
    output: Path = FIGURE_OPT,
    n: int = typer.Option(64, "-n", min=1, max=1000, help="Number of samples."),
    seed: int = seed_option("Seed for the codes"),
    columns: int = typer.Option(8, min=1, help="Images per row."),
    scale: int = SCALE_OPT,
    device: str = DEVICE,
    quiet: bool = QUIET,
) -> None:
    """Figure: what the model generates, decoding n one-hot codes drawn uniformly from the prior.

    Each image shows the decoder's Bernoulli means.
    """
    from ..figures import prior_samples, samples_figure

    with user_errors():
        path = checkpoint(ckpt_arg, ckpt)
        _checked(output, path)
        loaded = _load(path, device)
        title = f"Prior samples (uniform one-hot codes, seed {seed})\n{_label(loaded)}"
        _write(samples_figure(prior_samples(loaded.model, n, seed), title, columns, scale, loaded.data.shape), output, quiet)


@app.command()
def traverse(
    ckpt_arg: Optional[str] = CKPT_ARG,
    ckpt: Optional[str] = CKPT,
    output: Path = FIGURE_OPT,
    index: int = typer.Option(0, min=0, help="Which image (0-based)."),
    input: Optional[str] = INPUT_OPT,
    split: Optional[Split] = SPLIT_OPT,
    scale: int = SCALE_OPT,
    data_dir: Optional[Path] = DATA_DIR,
    device: str = DEVICE,
    quiet: bool = QUIET,
) -> None:
    """Figure: what each latent variable controls, for one image.

    Row v decodes the image's most likely code with variable v set to each class in turn
    (the other variables kept); the image's own class is framed in red.
    """
    from ..figures import reconstruct, traversal, traversal_figure

    with user_errors():
        path = checkpoint(ckpt_arg, ckpt)
        _checked(output, path, input, data_dir=data_dir)
        loaded = _load(path, device)
        x, source = _images(input, split, data_dir, index, 1, loaded.data, output)
        grid, code = traversal(loaded.model, x[0].to(_device(loaded)))
        title = f"Traversal of {source} image {index} (red frame: its own code)\n{_label(loaded)}"
        _write(traversal_figure(grid, code, x[0].numpy(), reconstruct(loaded.model, x.to(_device(loaded)))[0], title, scale,
                                loaded.data.shape), output, quiet)


@app.command()
def plot(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...", help="Run folders (from dvae train); a "
                                          "folder of runs (dvae train --seeds) stands for each of its runs."),
    output: Path = FIGURE_OPT,
    quiet: bool = QUIET,
) -> None:
    """Figure: learning curves of runs, one line per run labelled by method.

    Validation -ELBO, reconstruction log p(x|y), KL and the tau/beta schedule per epoch.
    """
    from ..figures import curves_figure
    from ..runfolder import CONFIG, METRICS, group_runs, read_run

    with user_errors():
        run_dirs = [run for run_dir in run_dirs for run in group_runs(run_dir) or [run_dir]]
        _checked(output, *(run_dir / name for run_dir in run_dirs for name in (CONFIG, METRICS)))
        names = [run_dir.resolve().name for run_dir in run_dirs]
        runs = []
        for run_dir, name in zip(run_dirs, names):
            method, metrics = read_run(run_dir)
            if names.count(name) > 1:  # same folder name in two places: say which
                name = f"{run_dir.resolve().parent.name}/{name}"
            runs.append((f"{method}: {name}", metrics))
        _write(curves_figure(runs), output, quiet)
