"""One house style for the book's figures: readable at book width, labelled axes, light grid."""

from __future__ import annotations

import matplotlib.pyplot as plt

#: colours for recurring roles, so "no flooding" looks the same in every figure of a chapter
COLOURS = {"baseline": "#4c72b0", "method": "#dd8452", "theory": "#55a868", "reference": "#8c8c8c",
           "extra": "#c44e52"}


def use_book_style() -> None:
    """Set matplotlib defaults for the book (PNG output, 6.4×3.6 in at 110 dpi, grid, no top/right spines)."""
    plt.rcParams.update({
        "figure.figsize": (6.4, 3.6), "figure.dpi": 110, "savefig.dpi": 110, "font.size": 10,
        "axes.titlesize": 10, "axes.labelsize": 10, "legend.fontsize": 9, "axes.grid": True,
        "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
        "figure.constrained_layout.use": True,
    })


def subplots(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 3.6, **kwargs):
    """``plt.subplots`` sized for the book: total width ``width`` inches, ``height`` per row."""
    return plt.subplots(nrows, ncols, figsize=(width, height * nrows), squeeze=False, **kwargs)
