"""`dvae heatmap`, `recon`, `samples`, `traverse` and `plot`: what a model learned, as figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import typer
from rich.color import Color
from rich.style import Style
from rich.text import Text
from torch import Tensor

from .cli_common import DATA_DIR_HELP, Split, stdout, user_errors
from .errors import DVAEError
from .pretrained import NAMES as PRETRAINED_NAMES

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

CKPT_ARG = typer.Argument(..., help="Checkpoint file, run folder (then its best checkpoint), or "
                          f"{PRETRAINED_NAMES} (shipped with dvae).")
INPUT_OPT = typer.Option(None, "--input", metavar="FILE",
                         help="Take the images from FILE (as `dvae encode` reads it; '-' = stdin) "
                              "instead of the MNIST split.")
SPLIT_OPT = typer.Option(None, help="MNIST split to take the images from (default valid).")
DATA_DIR_OPT = typer.Option(None, help=DATA_DIR_HELP)
SCALE_OPT = typer.Option(2, min=1, max=8, help="Screen pixels per image pixel (no smoothing).")
FIGURE_OPT = typer.Option(..., "-o", "--out", help="Figure file to write: .png, .svg or .pdf.")
SHADES = " ░▒▓█"  # pi in [0, .2), [.2, .4), ... when the terminal shows no colour


def _images(input: Optional[str], split: Optional[Split], data_dir: Optional[Path],
            index: int, count: Optional[int]) -> tuple[Tensor, str]:
    """Up to `count` images (all when None) from `index` on, from --input FILE or an MNIST
    split, binarized (n, 784); and the source's name."""
    if input is not None:
        if split is not None:
            raise DVAEError("give either --input or --split, not both")
        if input == "-" and sys.stdin.isatty():
            raise DVAEError("--input - reads stdin, but stdin is a terminal: pipe data in or give a file")
        from .inputs import read_images

        images, source = read_images(input), "stdin" if input == "-" else Path(input).name
    else:
        from .data import load_images

        source = (split or Split.valid).value
        images = load_images(source, data_dir)
    if index >= len(images):
        raise DVAEError(f"--index {index} is out of range: {source} has {len(images)} images "
                        f"(0-{len(images) - 1})")
    chosen = images[index:] if count is None else images[index : index + count]
    if input is None:
        from .data import binarize

        chosen = binarize(chosen)
    return chosen, source


def _label(ckpt: Checkpoint) -> str:
    """'folder/file (method, epoch N)': names a checkpoint in titles."""
    return f"{ckpt.path.parent.name}/{ckpt.path.name} ({ckpt.method}, epoch {ckpt.epoch})"


def _write(fig, out: Path) -> None:
    from .figures import save_figure

    save_figure(fig, out)
    print(out)


def heatmap_text(pi: np.ndarray, values: bool, color: bool) -> Text:
    """pi (D, K) for the terminal: a row per variable, a cell per class, coloured like the
    figures' colormap (shade characters without colour); `values` prints the probabilities."""
    import matplotlib

    from .figures import HEATMAP_CMAP

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


def heatmap(
    ckpt: Path = CKPT_ARG,
    input: Optional[str] = INPUT_OPT,
    index: Optional[int] = typer.Option(None, min=0, help="Which image (0-based; default 0)."),
    mean: bool = typer.Option(False, "--mean", help="Average pi over all images of the split (or FILE)."),
    split: Optional[Split] = SPLIT_OPT,
    values: bool = typer.Option(False, "--values", help="Print the probabilities in the cells."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write a figure instead: .png, .svg or .pdf."),
    json_out: bool = typer.Option(False, "--json", help="Print the matrix as JSON instead."),
    data_dir: Optional[Path] = DATA_DIR_OPT,
) -> None:
    """Show pi = q(y|x), the encoder's 30x10 probabilities (thesis Figure 5.1).

    For one image (default: the first validation image) or averaged over a split (--mean).
    Draws in the terminal, or writes a figure with -o, or prints JSON with --json.
    """
    from .checkpoint import load_checkpoint
    from .figures import encode_pi, heatmap_figure, output_format, save_figure

    with user_errors():
        if mean and index is not None:
            raise DVAEError("--mean averages over all images; --index does not apply")
        if out is not None:
            output_format(out)
        loaded = load_checkpoint(ckpt)
        index = None if mean else index or 0
        x, source = _images(input, split, data_dir, index or 0, None if mean else 1)
        pi = encode_pi(loaded.model, x)
        if mean:
            pi, what = pi.mean(axis=0), f"mean over {len(x)} {source} images"
        else:
            pi, what = pi[0], f"{source} image {index}"
        if out is not None:
            save_figure(heatmap_figure(pi, f"pi = q(y|x), {what}\n{_label(loaded)}", values), out)
    if json_out:
        print(json.dumps({"checkpoint": str(loaded.path), "method": loaded.method, "epoch": loaded.epoch,
                          "source": input if input is not None else source, "index": index,
                          "images": len(x), "pi": pi.tolist()}))
    elif out is not None:
        print(out)
    else:
        stdout.print(Text(f"pi = q(y|x), {what}\n{_label(loaded)}\n"), soft_wrap=True)
        stdout.print(heatmap_text(pi, values, stdout.color_system is not None), soft_wrap=True)


def recon(
    ckpt: Path = CKPT_ARG,
    out: Path = FIGURE_OPT,
    n: int = typer.Option(10, "-n", min=1, max=1000, help="Number of images."),
    index: int = typer.Option(0, min=0, help="First image (0-based)."),
    input: Optional[str] = INPUT_OPT,
    split: Optional[Split] = SPLIT_OPT,
    columns: int = typer.Option(10, min=1, help="Images per row."),
    scale: int = SCALE_OPT,
    data_dir: Optional[Path] = DATA_DIR_OPT,
) -> None:
    """Figure: input images above their reconstructions (thesis Figure 5.2).

    Each reconstruction shows the Bernoulli means decoded from the image's most likely one-hot code.
    """
    from .checkpoint import load_checkpoint
    from .figures import output_format, reconstruct, reconstructions_figure

    with user_errors():
        output_format(out)
        loaded = load_checkpoint(ckpt)
        x, source = _images(input, split, data_dir, index, n)
        title = f"Reconstructions of {source} images {index}-{index + len(x) - 1}\n{_label(loaded)}"
        _write(reconstructions_figure(x.numpy(), reconstruct(loaded.model, x), title, columns, scale), out)


def samples(
    ckpt: Path = CKPT_ARG,
    out: Path = FIGURE_OPT,
    n: int = typer.Option(64, "-n", min=1, max=1000, help="Number of samples."),
    seed: int = typer.Option(0, help="Seed for the codes."),
    columns: int = typer.Option(8, min=1, help="Images per row."),
    scale: int = SCALE_OPT,
) -> None:
    """Figure: what the model generates, decoding n one-hot codes drawn uniformly from the prior.

    Each image shows the decoder's Bernoulli means.
    """
    from .checkpoint import load_checkpoint
    from .figures import output_format, prior_samples, samples_figure

    with user_errors():
        output_format(out)
        loaded = load_checkpoint(ckpt)
        title = f"Prior samples (uniform one-hot codes, seed {seed})\n{_label(loaded)}"
        _write(samples_figure(prior_samples(loaded.model, n, seed), title, columns, scale), out)


def traverse(
    ckpt: Path = CKPT_ARG,
    out: Path = FIGURE_OPT,
    index: int = typer.Option(0, min=0, help="Which image (0-based)."),
    input: Optional[str] = INPUT_OPT,
    split: Optional[Split] = SPLIT_OPT,
    scale: int = SCALE_OPT,
    data_dir: Optional[Path] = DATA_DIR_OPT,
) -> None:
    """Figure: what each latent variable controls, for one image.

    Row v decodes the image's most likely code with variable v set to each class in turn
    (the other variables kept); the image's own class is framed in red.
    """
    from .checkpoint import load_checkpoint
    from .figures import output_format, reconstruct, traversal, traversal_figure

    with user_errors():
        output_format(out)
        loaded = load_checkpoint(ckpt)
        x, source = _images(input, split, data_dir, index, 1)
        grid, code = traversal(loaded.model, x[0])
        title = f"Traversal of {source} image {index} (red frame: its own code)\n{_label(loaded)}"
        _write(traversal_figure(grid, code, x[0].numpy(), reconstruct(loaded.model, x)[0], title, scale), out)


def plot(
    run_dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR...", help="Run folders (from dvae train)."),
    out: Path = FIGURE_OPT,
) -> None:
    """Figure: learning curves of runs, one line per run labelled by method.

    Validation -ELBO, reconstruction log p(x|y), KL and the tau/beta schedule per epoch.
    """
    from .figures import curves_figure, output_format
    from .runfolder import read_run

    with user_errors():
        output_format(out)
        runs = []
        for run_dir in run_dirs:
            method, metrics = read_run(run_dir)
            runs.append((f"{method}: {run_dir.resolve().name}", metrics))
        _write(curves_figure(runs), out)
