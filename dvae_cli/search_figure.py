"""The figure of a search: each query image in the left column, its k nearest stored images to the
right, nearest first, with their row numbers and scores under them (drawn like figures.py's grids).

Owns: the search figure's layout. Must not: search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .data import DEFAULT_DATA
from .figures import DPI, GAP, MIN_WIDTH, tile, tile_centers
from .terminal import shown_lines

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MARGINS = (70, 50, 15, 10)  # left, top, right, bottom pixels around the grid
SCALE = 2
LABEL_HEIGHT = 24  # pixels under each row of digits for the neighbours' row numbers and scores


def neighbours_figure(queries: np.ndarray, neighbours: np.ndarray, rows: np.ndarray, scores: np.ndarray,
                      title: str, score_format: str = "{:.1f}", shape: tuple[int, int] = DEFAULT_DATA.shape) -> Figure:
    """queries (Q, pixels) and their neighbours (Q, k, pixels) of `shape` (height, width), values in
    [0, 1]; rows, scores (Q, k)."""
    from matplotlib.figure import Figure

    count, k = rows.shape
    band = shape[0] * SCALE + LABEL_HEIGHT  # a row of images and its labels
    left, top, right, bottom = MARGINS
    width = max(left + (k + 2) * (shape[1] * SCALE + GAP) + GAP + right, MIN_WIDTH)
    height = top + count * band + bottom
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for q in range(count):
        grid = np.full((1, k + 2, queries.shape[1]), np.nan)  # query, a blank column, neighbours
        grid[0, 0] = queries[q]
        grid[0, 2:] = neighbours[q]
        picture = tile(grid, shape, SCALE)
        h, w = picture.shape[:2]
        y = top + q * band
        ax = fig.add_axes((left / width, 1 - (y + h) / height, w / width, h / height))
        ax.imshow(picture, interpolation="none", extent=(0, w, h, 0), aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"query {q}", rotation=0, ha="right", va="center", fontsize=8)
        for position, x in enumerate(tile_centers(k + 2, shape[1], SCALE)[2:]):
            ax.text(x, h + 2, f"#{rows[q, position]}\n{score_format.format(scores[q, position])}",
                    ha="center", va="top", fontsize=6, clip_on=False)
        for side in ax.spines.values():
            side.set_visible(False)
    fig.text(4 / width, 1 - 8 / height, shown_lines(title), fontsize=9, va="top", ha="left")
    return fig
