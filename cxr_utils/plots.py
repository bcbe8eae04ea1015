"""Figures used by more than one lesson: image grids, the curation funnel, counts against the paper.

Every function draws on a Matplotlib figure it creates (or an ``ax`` you pass), labels its axes,
and returns the figure or axes so a lesson can add to it. No figure is saved unless you ask.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cxr_utils import CLASSES

CLASS_COLOURS = {"COVID-19": "#d62728", "Normal": "#2ca02c", "Pneumonia": "#1f77b4"}
"""One colour per class, used by every lesson's figures."""

SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    size: float = 1.9,
    suptitle: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """Show ``images`` (greyscale ``(H, W)`` or RGB ``(H, W, 3)``, uint8 or floats in [0, 1]) in a grid.

    Args:
        images: the pictures, row by row.
        titles: one short title per image (optional).
        ncols: pictures per row.
        size: inches per picture.
        suptitle: a title over the whole grid.
        row_labels: a label on the left of each row (optional).

    Returns:
        The figure.
    """
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.08), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255 if img.dtype == np.uint8 else 1)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def funnel_chart(funnel: pd.DataFrame, ax: plt.Axes | None = None) -> plt.Axes:
    """Draw the images left after each curation rule (``funnel`` from ``CurationResult.funnel()``)."""
    ax = ax or plt.subplots(figsize=(8, 0.42 * len(funnel) + 0.8))[1]
    labels = ["listed by the sources", *funnel["rule"].iloc[1:]]
    y = np.arange(len(funnel))[::-1]
    ax.barh(y, funnel["left"], color="#9ecae1")
    ax.barh(y, funnel["removed"], left=funnel["left"], color="#de2d26", label="removed by this rule")
    for yi, left, removed in zip(y, funnel["left"], funnel["removed"], strict=True):
        text = f"{left:,}" + (f"  (-{removed:,})" if removed else "")
        ax.text(left + removed + 40, yi, text, va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("images")
    ax.set_xlim(0, funnel["left"].iloc[0] * 1.22)
    ax.set_title("Curation funnel: images left after each rule")
    ax.legend(loc="lower right", fontsize=8)
    return ax


def counts_against_paper(ours: pd.DataFrame, paper: pd.DataFrame) -> plt.Figure:
    """Bar chart of images per class and split, ours next to the paper's Table 1.

    ``ours``: classes x splits (``train``, ``val``, ``test``); ``paper``: classes x (``train``, ``test``).
    """
    fig, axes = plt.subplots(1, len(CLASSES), figsize=(11, 3.2), sharey=False)
    for ax, label in zip(axes, CLASSES, strict=True):
        bars = {
            "paper train": paper.at[label, "train"],
            "our train": ours.at[label, "train"],
            "our val": ours.at[label, "val"],
            "paper test": paper.at[label, "test"],
            "our test": ours.at[label, "test"],
        }
        colours = ["#bbbbbb", SPLIT_COLOURS["train"], SPLIT_COLOURS["val"], "#bbbbbb", SPLIT_COLOURS["test"]]
        ax.bar(list(bars), list(bars.values()), color=colours)
        for i, v in enumerate(bars.values()):
            ax.text(i, v, f"{int(v)}", ha="center", va="bottom", fontsize=8)
        ax.set_title(label, color=CLASS_COLOURS[label])
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_ylabel("images")
        ax.margins(y=0.15)
    fig.suptitle("Images per split: the paper's Table 1 (grey) and ours")
    fig.tight_layout()
    return fig


def show_jpeg(fig: plt.Figure, quality: int = 80, dpi: int = 80) -> None:
    """Display ``fig`` in the notebook as a JPEG and close it.

    Grids of radiographs are photographs, not line art: as PNG they weigh hundreds of kB in the saved
    notebook, as JPEG a fifth of that with no visible loss. Plots with lines and text stay PNG.
    """
    import io

    from IPython.display import Image, display
    from PIL import Image as PILImage

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    out = io.BytesIO()
    PILImage.open(buf).convert("RGB").save(out, format="JPEG", quality=quality, optimize=True)
    display(Image(data=out.getvalue(), format="jpeg"))
