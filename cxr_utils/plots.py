"""The lessons' figures: image grids, the curation funnel, counts against the paper, and evaluation.

The evaluation figures of lesson 07 draw :class:`cxr_utils.evaluate.Report` s and the tables of
:mod:`cxr_utils.compare` and :mod:`cxr_utils.external`: confusion matrices, ROC curves, reliability
diagrams, the paper-vs-ours forest plot and the in-source-vs-external bars.

Every function draws on a Matplotlib figure it creates (or an ``ax`` you pass), labels its axes,
and returns the figure or axes so a lesson can add to it. No figure is saved unless you ask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

from cxr_utils import CLASSES, preprocess
from cxr_utils.metrics import K, interval_text

if TYPE_CHECKING:  # pragma: no cover
    from cxr_utils.evaluate import Report

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



# ---------------------------------------------------------------------------------------------
# Evaluation (lesson 07)


def plot_confusion_matrices(tables: Mapping[str, pd.DataFrame], suptitle: str | None = None) -> plt.Figure:
    """Draw confusion matrices side by side: colour = row share, text = count and row percentage.

    ``tables``: title -> counts (rows actual, columns predicted), e.g. ``{"paper (Table 5)": paper.CONFUSION}``.
    """
    fig, axes = plt.subplots(1, len(tables), figsize=(3.7 * len(tables), 3.6), squeeze=False)
    for ax, (title, cm) in zip(axes[0], tables.items(), strict=True):
        counts = cm.to_numpy()
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(counts.shape[0]):
            for j in range(counts.shape[1]):
                ax.text(j, i, f"{counts[i, j]:d}\n{share[i, j]:.1%}", ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(K), CLASSES, fontsize=8)
        ax.set_yticks(range(K), CLASSES, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("actual class")
        ax.set_title(f"{title}\n({int(counts.sum())} test images)", fontsize=10)
    fig.suptitle(suptitle or "Confusion matrices: count and share of each actual class (row)")
    fig.tight_layout()
    return fig


def plot_roc_curves(reports: Mapping[str, Report]) -> plt.Figure:
    """Draw the one-vs-rest ROC curve of each class, one panel per run, AUC [interval] in the legend."""
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4), squeeze=False)
    for ax, (name, rep) in zip(axes[0], reports.items(), strict=True):
        for label, (fpr, tpr) in rep.roc.items():
            r = rep.per_class.loc[(label, "AUC")]
            ax.plot(fpr, tpr, color=CLASS_COLOURS[label], lw=1.6,
                    label=f"{label}: AUC {interval_text(r['estimate'], r['ci_low'], r['ci_high'])}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
        ax.set_title(f"{name}: one-vs-rest ROC, test split")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_aspect("equal")
    fig.tight_layout()
    return fig


def plot_reliability(reports: Mapping[str, Report]) -> plt.Figure:
    """Draw each run's reliability diagram (accuracy vs confidence per bin) above a histogram of confidences."""
    fig, axes = plt.subplots(2, len(reports), figsize=(4.2 * len(reports), 5.2), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for col, (name, rep) in enumerate(reports.items()):
        cal = rep.calibration
        width = cal["bin_high"] - cal["bin_low"]
        ax = axes[0, col]
        ax.bar(cal["bin_low"], cal["accuracy"].fillna(0), width=width, align="edge", color="#9ecae1",
               edgecolor="#3182bd", label="accuracy in bin")
        ax.plot(cal["confidence"], cal["accuracy"], "o", color="#08519c", ms=4, label="(mean confidence, accuracy)")
        ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
        e = rep.overall.loc["expected calibration error"]
        ax.set_title(f"{name}: ECE {interval_text(e['estimate'], e['ci_low'], e['ci_high'])}", fontsize=10)
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=7)
        axes[1, col].bar(cal["bin_low"], cal["images"], width=width, align="edge", color="#bdbdbd", edgecolor="grey")
        axes[1, col].set_xlabel("confidence (highest predicted probability)")
        axes[1, col].set_ylabel("images")
    fig.tight_layout()
    return fig


def plot_comparison(
    table: pd.DataFrame, names: Sequence[str], figures: Sequence[tuple[str, str]],
    labels: Mapping[str, str] | None = None,
) -> plt.Figure:
    """Forest plot: per ``(group, figure)`` row of :func:`compare_with_paper`, the paper and each run with intervals.

    ``labels`` maps a run name to its legend text (default: the name).
    """
    labels = dict(labels or {})
    series = [("published (Zhong 2020)", "published", "#7f7f7f")]
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd"]
    series += [(labels.get(n, n), n, palette[i % len(palette)]) for i, n in enumerate(names)]
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(figures) + 1.5))
    offsets = np.linspace(-0.25, 0.25, len(series)) if len(series) > 1 else [0.0]
    for i, key in enumerate(figures):
        if key not in table.index:
            continue
        row = table.loc[key]
        for s, (label, col, colour) in enumerate(series):
            v = row.get(col, np.nan)
            if not np.isfinite(v):
                continue
            lo, hi = row.get(f"{col}_low", np.nan), row.get(f"{col}_high", np.nan)
            err = [[max(v - lo, 0)], [max(hi - v, 0)]] if np.isfinite(lo) and np.isfinite(hi) else None
            ax.errorbar(v, i + offsets[s], xerr=err, fmt="o", color=colour, ms=4, capsize=2,
                        label=label if i == 0 else None)
    ax.set_yticks(range(len(figures)), [f[1] if f[0] == "overall" else f"{f[0]}: {f[1]}" for f in figures],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("value (dot) with its 95 % interval (bar)")
    ax.set_title("The paper's figures and ours, with intervals")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.1), ncol=len(series), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_external(summaries: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Bar charts of :func:`external_summary`, one panel per run: each figure on the test split and externally.

    Bars show the estimate with its 95 % Wilson interval; the foot of each bar gives k/n.
    """
    fig, axes = plt.subplots(1, len(summaries), figsize=(6.2 * len(summaries), 3.4), squeeze=False, sharey=True)
    for ax, (name, summary) in zip(axes[0], summaries.items(), strict=True):
        figures = list(dict.fromkeys(summary.index.get_level_values("figure")))
        x = np.arange(len(figures))
        for s, (set_name, colour) in enumerate((("test", "#55a868"), ("external", "#c44e52"))):
            vals = [summary.loc[(f, set_name)] for f in figures]
            est = np.array([v["estimate"] for v in vals])
            err = np.array([[v["estimate"] - v["wilson_low"], v["wilson_high"] - v["estimate"]] for v in vals]).T
            err = np.maximum(err, 0)  # at k = n the clipped bound can sit a rounding error below the estimate
            xs = x + (s - 0.5) * 0.38
            ax.bar(xs, est, width=0.38, color=colour, yerr=err, capsize=3,
                   label="in-source test split" if set_name == "test" else "external collection")
            for xi, v in zip(xs, vals, strict=True):
                ax.text(xi, 0.02, f"{int(v['k'])}/{int(v['n'])}", ha="center", va="bottom", fontsize=7, color="white")
        ax.set_xticks(x, [f.replace(" for ", "\nfor ") for f in figures], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share of images (95 % Wilson interval)")
        ax.set_title(f"{name}: in-source test split vs external collection", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Where the network looks (lesson 08, cxr-predict)


def overlay_image(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """An X-ray with a Grad-CAM map laid over it: the map in the ``jet`` colours, stronger where it is higher.

    Args:
        pixels: the image, ``uint8`` ``(H, W)`` or ``(H, W, C)`` (model input size).
        cam: the map, ``(H, W)`` in [0, 1] (:func:`cxr_utils.saliency.grad_cam`).
        alpha: how opaque the map is where it is 1 (where it is 0 the X-ray shows alone).

    Returns:
        A PIL RGB image of the same size.
    """
    import matplotlib

    grey = pixels if pixels.ndim == 2 else pixels[..., :3].mean(axis=-1)
    base = np.repeat(preprocess.scale(np.asarray(grey, np.uint8)).astype(np.float64)[..., None], 3, axis=-1)
    cam = np.clip(np.asarray(cam, np.float64), 0.0, 1.0)
    heat = matplotlib.colormaps["jet"](cam)[..., :3]
    weight = alpha * cam[..., None]
    return Image.fromarray(np.round(((1 - weight) * base + weight * heat) * 255).astype(np.uint8), mode="RGB")
