"""What the model learned, as arrays and as figures: the encoder's probabilities pi (thesis
Figure 5.1), reconstructions (Figure 5.2), prior samples, per-variable traversals, learning curves.

The array functions take a model and its targets (N, pixels) and return numpy arrays.
The figure functions take those arrays and return matplotlib Figures (no pyplot, no display);
`save_figure` writes one as PNG, SVG or PDF. Digits are drawn ink-black on white, each pixel a
`scale` x `scale` block (no interpolation), GAP-pixel grey lines between them (`tile`: the one grid
look of every picture of digits, `dvae decode -o x.png` included); probabilities use viridis.

Owns: pictures. Must not: parse flags or pick checkpoints (the CLI does).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .commandline import suite_command
from .data import DEFAULT_DATA
from .errors import DVAEError
from .fileio import atomic_write_bytes
from .runfolder import monitored
from .model import DiscreteVAE, one_hot_argmax
from .seeds import check_seed
from .terminal import shown_lines

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

DPI = 100
GAP = 2  # pixels between two digits of a grid
GAP_RGB = (200, 200, 200)
HIGHLIGHT_RGB = (220, 30, 30)
HEATMAP_CMAP = "viridis"
FIGURE_FORMATS = ("png", "svg", "pdf")
# Pixel margins around the picture of each figure: left, top, right, bottom.
RECON_MARGINS = (85, 45, 15, 10)
SAMPLES_MARGINS = (10, 45, 10, 10)
TRAVERSE_MARGINS = (85, 95, 15, 10)  # the input/reconstruction column sits inside the left part
TRAVERSE_SPACING = 60  # between that column and the grid: room for the grid's labels
MIN_WIDTH = 420  # room for a two-line title: narrower pictures get white space on the right
HEATMAP_CELL = (28, 18)  # width, height in pixels of one pi_dk
HEATMAP_MARGINS = (60, 80, 80, 15)  # the right margin holds the colour bar
CURVES_SIZE = (1400, 700)


# ---- arrays -------------------------------------------------------------------------------

@torch.no_grad()
def encode_pi(model: DiscreteVAE, x: Tensor, batch_size: int = 1000) -> np.ndarray:
    """pi = q(y|x) for each image: (N, D, K) probabilities."""
    parts = [model.encode(x[i : i + batch_size]).exp() for i in range(0, len(x), batch_size)]
    return torch.cat(parts).cpu().numpy()


def mean_pi(model: DiscreteVAE, x: Tensor) -> np.ndarray:
    """pi averaged over the images: (D, K)."""
    return encode_pi(model, x).mean(axis=0)


@torch.no_grad()
def reconstruct(model: DiscreteVAE, x: Tensor) -> np.ndarray:
    """Bernoulli means (N, pixels) decoded from each image's most likely one-hot code."""
    return torch.sigmoid(model.decode(one_hot_argmax(model.encode(x)))).cpu().numpy()


@torch.no_grad()
def prior_samples(model: DiscreteVAE, n: int, seed: int = 0) -> np.ndarray:
    """Bernoulli means (n, pixels) decoded from n one-hot codes drawn uniformly (the prior)."""
    cfg = model.config
    generator = torch.Generator().manual_seed(check_seed(seed))
    classes = torch.randint(cfg.classes, (n, cfg.latent_vars), generator=generator)
    codes = torch.nn.functional.one_hot(classes, cfg.classes).float().to(next(model.parameters()).device)
    return torch.sigmoid(model.decode(codes)).cpu().numpy()


@torch.no_grad()
def traversal(model: DiscreteVAE, x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """For one image (pixels,): Bernoulli means (D, K, pixels) where [v, k] decodes the image's most
    likely code with variable v set to class k; and that code's classes (D,)."""
    cfg = model.config
    code = one_hot_argmax(model.encode(x.view(1, -1)))[0]  # (D, K)
    codes = code.repeat(cfg.latent_vars, cfg.classes, 1, 1)  # [v, k] = the code ...
    variables = torch.arange(cfg.latent_vars, device=code.device)
    codes[variables, :, variables, :] = torch.eye(cfg.classes, device=code.device)  # ... with variable v one-hot k
    means = torch.sigmoid(model.decode(codes.view(-1, cfg.latent_vars, cfg.classes)))
    return means.view(cfg.latent_vars, cfg.classes, -1).cpu().numpy(), code.argmax(-1).cpu().numpy()


def tile(images: np.ndarray, shape: tuple[int, int], scale: int) -> np.ndarray:
    """A grid of images (R, C, pixels) of `shape` (height, width) with values in [0, 1] (NaN = empty
    slot) as an RGB uint8 picture: ink black on white, each pixel a scale x scale block, GAP-pixel
    lines between images."""
    rows, cols = images.shape[:2]
    high, wide = shape[0] * scale, shape[1] * scale
    picture = np.empty((rows * (high + GAP) + GAP, cols * (wide + GAP) + GAP, 3), np.uint8)
    picture[:] = GAP_RGB
    gray = np.rint(255 * (1 - np.clip(images, 0, 1))).reshape(rows, cols, *shape)
    gray = gray.repeat(scale, axis=2).repeat(scale, axis=3)
    for r in range(rows):
        for c in range(cols):
            if not np.isnan(images[r, c]).any():
                top, left = GAP + r * (high + GAP), GAP + c * (wide + GAP)
                picture[top : top + high, left : left + wide] = gray[r, c, :, :, None]
    return picture


def tile_centers(n: int, side: int, scale: int) -> list[float]:
    """Pixel coordinates of the centres of n images along one side of a `tile` picture; `side` is
    the images' size along it (height for rows, width for columns)."""
    cell = side * scale
    return [GAP + i * (cell + GAP) + cell / 2 for i in range(n)]


# ---- figures ------------------------------------------------------------------------------

def _figure(width: int, height: int) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width / DPI, height / DPI), dpi=DPI)


def _place(fig: Figure, picture: np.ndarray, left: int, top: int) -> Axes:
    """Axes showing `picture` pixel for pixel with its top-left corner at (left, top) pixels."""
    width, height = fig.get_size_inches() * DPI
    h, w = picture.shape[:2]
    ax = fig.add_axes((left / width, 1 - (top + h) / height, w / width, h / height))
    ax.imshow(picture, interpolation="none", extent=(0, w, h, 0), aspect="auto")
    return ax


def _picture_figure(picture: np.ndarray, margins: tuple[int, int, int, int]) -> tuple[Figure, Axes]:
    """A figure just big enough for `picture` and the margins (left, top, right, bottom)."""
    left, top, right, bottom = margins
    h, w = picture.shape[:2]
    fig = _figure(max(left + w + right, MIN_WIDTH), top + h + bottom)
    return fig, _place(fig, picture, left, top)


def reconstructions_figure(x: np.ndarray, recon: np.ndarray, title: str, columns: int = 10,
                           scale: int = 2, shape: tuple[int, int] = DEFAULT_DATA.shape) -> Figure:
    """Inputs (N, pixels) above their reconstructions, `columns` per row pair (thesis Figure 5.2);
    `shape` is the images' (height, width)."""
    n = len(x)
    columns = min(columns, n)
    blocks = -(-n // columns)
    grid = np.full((blocks, 2, columns, x.shape[1]), np.nan)
    for i in range(n):
        grid[i // columns, :, i % columns] = x[i], recon[i]
    picture = tile(grid.reshape(2 * blocks, columns, -1), shape, scale)
    fig, ax = _picture_figure(picture, RECON_MARGINS)
    ax.set_xticks([])
    ax.set_yticks(tile_centers(2 * blocks, shape[0], scale), ["input", "reconstr."] * blocks)
    ax.set_title(shown_lines(title), fontsize=9, loc="left")
    return fig


def samples_figure(images: np.ndarray, title: str, columns: int = 8, scale: int = 2,
                   shape: tuple[int, int] = DEFAULT_DATA.shape) -> Figure:
    """Generated images (n, pixels) of `shape` in a grid of `columns` columns."""
    n = len(images)
    columns = min(columns, n)
    grid = np.full((-(-n // columns) * columns, images.shape[1]), np.nan)
    grid[:n] = images
    fig, ax = _picture_figure(tile(grid.reshape(-1, columns, grid.shape[1]), shape, scale), SAMPLES_MARGINS)
    ax.set_axis_off()
    ax.set_title(shown_lines(title), fontsize=9, loc="left")
    return fig


def traversal_figure(grid: np.ndarray, code: np.ndarray, x: np.ndarray, recon: np.ndarray,
                     title: str, scale: int = 2, shape: tuple[int, int] = DEFAULT_DATA.shape) -> Figure:
    """The (D, K, pixels) traversal grid, the image's own class framed in red in each row;
    the input and its reconstruction on the left."""
    variables, classes = grid.shape[:2]
    left, top, right, bottom = TRAVERSE_MARGINS
    side = tile(np.stack([x, recon])[:, None], shape, scale)  # input above reconstruction
    high, wide = shape[0] * scale + GAP, shape[1] * scale + GAP
    fig, ax = _picture_figure(tile(grid, shape, scale), (left + side.shape[1] + TRAVERSE_SPACING, top, right, bottom))
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xticks(tile_centers(classes, shape[1], scale), range(classes))
    ax.set_yticks(tile_centers(variables, shape[0], scale), range(variables), fontsize=7)
    ax.set_xlabel("class k")
    ax.set_ylabel("variable v (set to class k, the others kept)")
    for v in range(variables):  # frame each row's own class: the unchanged code
        ax.add_patch(_frame(code[v] * wide, v * high, wide + GAP, high + GAP))
    side_ax = _place(fig, side, left, top)
    side_ax.set_xticks([])
    side_ax.set_yticks(tile_centers(2, shape[0], scale), ["input", "reconstr."])
    fig.suptitle(shown_lines(title), x=10 / fig.bbox.width, y=1 - 8 / fig.bbox.height, ha="left", va="top", fontsize=9)
    return fig


def _frame(x: float, y: float, width: float, height: float) -> Rectangle:
    """A red outline of the image whose tile (gap included) starts at (x, y)."""
    from matplotlib.patches import Rectangle

    return Rectangle((x + GAP / 2, y + GAP / 2), width - GAP, height - GAP, fill=False,
                     edgecolor=np.array(HIGHLIGHT_RGB) / 255, linewidth=1.5)


def heatmap_figure(pi: np.ndarray, title: str, values: bool = False) -> Figure:
    """pi (D, K) as a heatmap: rows = variables, columns = classes, with a colour bar."""
    variables, classes = pi.shape
    (cell_w, cell_h), (left, top, right, bottom) = HEATMAP_CELL, HEATMAP_MARGINS
    w, h = classes * cell_w, variables * cell_h
    width, height = left + w + right, top + h + bottom
    fig = _figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, w / width, h / height))
    image = ax.imshow(pi, cmap=HEATMAP_CMAP, vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    ax.set_xticks(range(classes))
    ax.set_yticks(range(variables), labels=range(variables), fontsize=7)
    ax.set_xlabel("class k")
    ax.set_ylabel("variable d")
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    if values:
        for d in range(variables):
            for k in range(classes):
                if pi[d, k] >= 0.005:
                    ax.text(k, d, f"{pi[d, k]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6,
                            color="white" if pi[d, k] < 0.5 else "black")
    bar = fig.add_axes(((left + w + 12) / width, bottom / height, 12 / width, h / height))
    fig.colorbar(image, cax=bar, label="probability pi_dk")
    fig.suptitle(shown_lines(title), x=8 / width, y=1 - 6 / height, ha="left", va="top", fontsize=8)
    return fig


CURVES = (  # on the validation split (the test split for a run trained without one)
    ("neg_elbo", "validation (or test) -ELBO (nats)"),
    ("log_lik", "validation (or test) log p(x|y) (reconstruction)"),
    ("kl", "validation (or test) KL(q(y|x) || uniform)"),
    ("classes_used", "classes used per variable (perplexity of mean pi)"),
    ("mean_max_prob", "mean max-probability of pi"),
)
SCHEDULE = (("tau", "-"), ("beta", "--"), ("diversity", ":"))


def curves_figure(runs: list[tuple[str, list[dict]]]) -> Figure:
    """Validation -ELBO, log p(x|y), KL, classes used, max pi and the tau/beta/diversity schedule
    per epoch, one line per run (runs = [(label, metrics), ...]). A collapse of the codes onto a
    few classes shows in the classes-used panel; runs recorded before it existed leave it blank."""
    fig = _figure(*CURVES_SIZE)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for color, (label, metrics) in enumerate(runs):
        label = shown_lines(label)  # a run folder's name and its config.json's method: from files
        epochs = [m["epoch"] for m in metrics]
        style = {"color": f"C{color}", "marker": "o", "markersize": 2.5, "linewidth": 1.2}
        for ax, (key, _) in zip(axes, CURVES):
            ax.plot(epochs, [monitored(m, key) for m in metrics], label=label, **style)
        for key, dash in SCHEDULE:
            if any(key in m for m in metrics):
                axes[5].plot(epochs, [m.get(key, np.nan) for m in metrics], linestyle=dash,
                             label=f"{key}, {label}", **style)
    for ax, (_, name) in zip(axes, CURVES + ((None, "tau (gumbel) / beta, diversity (dtp)"),)):
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[3:]:
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=8)
    if axes[5].lines:
        axes[5].legend(fontsize=8)
    fig.suptitle("Learning curves")
    return fig


def suite_figure(results: dict) -> Figure:
    """One panel per latent shape of a benchmark suite (experiments/reinmax.py): each method's training
    and test -ELBO, mean and sd over seeds, and a black bar at the published records' mean."""
    rows = [row for row in results["rows"] if row["mean"]]  # a row with no finished run has nothing to draw
    shapes = list(dict.fromkeys(row["shape"] for row in rows))
    fig = _figure(max(420, 380 * len(shapes)), 420)
    fig.set_layout_engine("constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shapes), squeeze=False)[0])
    for ax, shape in zip(axes, shapes):
        mine = [row for row in rows if row["shape"] == shape]
        x = np.arange(len(mine))
        for offset, key, label in ((-0.2, "train_neg_elbo", "train"), (0.2, "test_neg_elbo", "test")):
            means = [row["mean"][key] for row in mine]
            errors = [row["std"][key] or 0.0 for row in mine]
            ax.bar(x + offset, means, 0.4, yerr=errors, label=label, capsize=2)
            published = [(i + offset, row["record"][key]) for i, row in enumerate(mine) if row.get("record")]
            if published:
                ax.scatter(*zip(*published), marker="_", s=300, color="black", zorder=3,
                           label="published" if key == "test_neg_elbo" else None)
        ax.set_xticks(x, [row["method"] for row in mine], rotation=45, ha="right", fontsize=8)
        low = min(row["mean"][k] for row in mine for k in ("train_neg_elbo", "test_neg_elbo"))
        high = max(row["mean"][k] for row in mine for k in ("train_neg_elbo", "test_neg_elbo"))
        ax.set_ylim(low - 0.1 * (high - low) - 1, high + 0.1 * (high - low) + 1)
        ax.set_title(f"{shape} (classes x variables)", fontsize=9)
        ax.set_ylabel("-ELBO (nats)")
    axes[0].legend(fontsize=8)
    p = results["protocol"]
    fig.suptitle(f"{suite_command(p['suite'])}, {p['epochs']} epochs, mean ± sd over seeds", fontsize=9)
    return fig


def output_format(path: str | os.PathLike) -> str:
    """The figure format named by the file's suffix: png, svg or pdf."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in FIGURE_FORMATS:
        raise DVAEError(f"{path}: unsupported figure format {Path(path).suffix or '(no suffix)'!r}; "
                        f"use .png, .svg or .pdf")
    return fmt


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write the figure to `path` (format from its suffix) under the output policy (fileio.py)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=output_format(path), dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())
