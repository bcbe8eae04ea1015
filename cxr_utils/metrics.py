"""Metrics of a predictions table and their 95 % intervals: one implementation, used everywhere.

Every figure the course reports is computed here: the run's ``metrics.json`` (:func:`summary`),
the report of lesson 07 (:mod:`cxr_utils.evaluate`), the comparisons (:mod:`cxr_utils.compare`),
the external set (:mod:`cxr_utils.external`) and the tools.

- Counts: :func:`confusion_matrix` (rows actual, columns predicted, as the paper's Table 5) and
  :func:`metrics_from_confusion` (accuracy; per-class precision, recall, specificity, F1; macro
  averages), :func:`keras_micro_precision_recall` (what the paper's Keras metrics measured),
  :func:`roc_auc`, :func:`expected_calibration_error`, :func:`calibration_table`, :func:`image_losses`.
- Intervals: :func:`wilson_interval` (images independent) and the **bootstrap over patients**
  (:func:`resampling_groups`, :func:`bootstrap_weights`, :func:`percentiles`): whole ``split_group`` s
  are resampled with replacement, so the several images of one patient move together.
- Tests: :func:`mcnemar_exact` for two classifiers on the same images.

Every metric accepts image weights, one vector ``[N]`` or a batch of bootstrap replicates ``[B, N]``,
so 2,000 replicates of everything are a few matrix products in NumPy. A ratio whose denominator is
0 (a class absent, or never predicted) is NaN, never 0.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, paper
from cxr_utils.predictions import predicted, probabilities, true_labels

K = len(CLASSES)
"""The number of classes."""


# ---------------------------------------------------------------------------------------------
# Counts and ratios (every function accepts weights: 1-D [N] or a batch of replicates [B, N])

def _weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones((1, n))
    w = np.asarray(weights, dtype=np.float64)
    return w[None, :] if w.ndim == 1 else w


def _squeeze(value: np.ndarray, weights: np.ndarray | None) -> np.ndarray | float:
    if weights is None or np.asarray(weights).ndim == 1:
        value = value[0]
        return float(value) if np.ndim(value) == 0 else value
    return value


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = K, weights: np.ndarray | None = None
) -> np.ndarray:
    """Return the confusion matrix (rows actual, columns predicted), as in the paper's Table 5.

    Args:
        y_true, y_pred: int class indices ``[N]``.
        n_classes: number of classes.
        weights: optional image weights ``[N]`` or bootstrap weights ``[B, N]``.

    Returns:
        ``[n_classes, n_classes]`` counts (int when unweighted), or ``[B, n_classes, n_classes]``.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cell = y_true * n_classes + y_pred
    if weights is None:
        return np.bincount(cell, minlength=n_classes**2).reshape(n_classes, n_classes)
    w = _weights(weights, len(cell))
    onehot = np.zeros((len(cell), n_classes**2))
    onehot[np.arange(len(cell)), cell] = 1.0
    cm = (w @ onehot).reshape(-1, n_classes, n_classes)
    return _squeeze(cm, weights)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Return accuracy and per-class metrics of one confusion matrix ``[K, K]`` or a stack ``[..., K, K]``.

    Per class ``k`` (one-vs-rest, from the matrix with rows actual and columns predicted):
    ``precision = TP/(TP+FP)``, ``recall`` (sensitivity) ``= TP/(TP+FN)``, ``specificity = TN/(TN+FP)``,
    ``f1 = 2TP/(2TP+FP+FN)``. A ratio whose denominator is 0 (a class absent from the test set, or
    never predicted) is NaN, not 0; the macro averages are the mean over the classes where the metric
    is defined.

    Returns:
        ``{"accuracy": [...], "precision": [..., K], "recall", "specificity", "f1",
        "macro_precision": [...], "macro_recall", "macro_specificity", "macro_f1"}``.
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum(axis=(-2, -1))
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    actual = cm.sum(axis=-1)
    predicted = cm.sum(axis=-2)
    fp, fn = predicted - tp, actual - tp
    tn = total[..., None] - tp - fp - fn
    out = {
        "accuracy": safe_ratio(tp.sum(axis=-1), total),
        "precision": safe_ratio(tp, tp + fp),
        "recall": safe_ratio(tp, tp + fn),
        "specificity": safe_ratio(tn, tn + fp),
        "f1": safe_ratio(2 * tp, 2 * tp + fp + fn),
    }
    for name in ("precision", "recall", "specificity", "f1"):
        v = out[name]
        defined = np.isfinite(v)
        out[f"macro_{name}"] = safe_ratio(np.where(defined, v, 0).sum(axis=-1), defined.sum(axis=-1))
    return out


def keras_micro_precision_recall(
    y_true: np.ndarray, probs: np.ndarray, threshold: float = 0.5, weights: np.ndarray | None = None
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Return precision and recall as ``keras.metrics.Precision()`` / ``Recall()`` give them on one-hot targets.

    Keras compares every one of the 3 probabilities of an image with ``threshold`` and pools the
    3N decisions (micro-average): ``TP`` = images whose true-class probability exceeds 0.5,
    ``FP`` = other probabilities above 0.5, ``FN`` = images whose true-class probability is at most 0.5.
    So recall is the share of images with ``p(true class) > 0.5`` and precision the share of
    "confident" calls (any probability > 0.5) that are right. Neither is a per-class metric.

    Args:
        y_true: int class indices ``[N]``.
        probs: probabilities ``[N, K]``.
        threshold: Keras' default 0.5.
        weights: optional ``[N]`` or ``[B, N]`` (bootstrap).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    above = probs > threshold
    tp_i = above[np.arange(len(y_true)), y_true].astype(np.float64)
    called_i = above.sum(axis=1).astype(np.float64)
    w = _weights(weights, len(y_true))
    tp, called, n = w @ tp_i, w @ called_i, w.sum(axis=1)
    return _squeeze(safe_ratio(tp, called), weights), _squeeze(safe_ratio(tp, n), weights)


def roc_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | float:
    """Return the area under the ROC curve of ``scores`` for the binary ``positive`` labels.

    The AUC is the probability that a random positive scores above a random negative (ties count
    one half), computed with image weights so that it also serves the bootstrap. NaN when there are
    no positives or no negatives. Unweighted, it equals ``sklearn.metrics.roc_auc_score``.
    """
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = _weights(weights, len(scores))
    order = np.argsort(scores, kind="mergesort")
    s, pos = scores[order], positive[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ws = w[:, order]
    wp = np.add.reduceat(ws * pos, starts, axis=1)
    wn = np.add.reduceat(ws * ~pos, starts, axis=1)
    below = np.cumsum(wn, axis=1) - wn
    auc = safe_ratio((wp * (below + 0.5 * wn)).sum(axis=1), wp.sum(axis=1) * wn.sum(axis=1))
    return _squeeze(auc, weights)


def _bins(probs: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    conf = probs.max(axis=1)
    return conf, np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10, weights: np.ndarray | None = None
) -> np.ndarray | float:
    """Return the expected calibration error of the top-class confidence (Guo et al., 2017).

    Images are binned by their highest probability into ``n_bins`` equal-width bins over [0, 1];
    ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|``. 0 for a calibrated model.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    conf, b = _bins(probs, n_bins)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    onehot = np.zeros((len(b), n_bins))
    onehot[np.arange(len(b)), b] = 1.0
    w = _weights(weights, len(b))
    gap = np.abs(w @ (onehot * correct[:, None]) - w @ (onehot * conf[:, None])).sum(axis=1)
    return _squeeze(safe_ratio(gap, w.sum(axis=1)), weights)


def calibration_table(y_true: np.ndarray, probs: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Return the reliability table: per confidence bin, images, mean confidence and accuracy.

    Columns: ``bin_low``, ``bin_high``, ``images``, ``confidence``, ``accuracy`` (NaN for empty bins).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    conf, b = _bins(probs, n_bins)
    correct = probs.argmax(axis=1) == y_true
    rows = []
    for i in range(n_bins):
        m = b == i
        rows.append({"bin_low": i / n_bins, "bin_high": (i + 1) / n_bins, "images": int(m.sum()),
                     "confidence": conf[m].mean() if m.any() else np.nan,
                     "accuracy": correct[m].mean() if m.any() else np.nan})
    return pd.DataFrame(rows)


def image_losses(y_true: np.ndarray, probs: np.ndarray, eps: float = paper.LABEL_SMOOTHING) -> np.ndarray:
    """Return each image's cross-entropy with Keras' label smoothing ``eps`` (the loss the paper reports)."""
    from cxr_utils import losses  # imports Keras: only when a loss is asked for

    return losses.cross_entropy(losses.smoothed_targets(y_true, eps, "keras", len(CLASSES)), probs)


# ---------------------------------------------------------------------------------------------
# Intervals


def wilson_interval(
    k: np.ndarray | float, n: np.ndarray | float, confidence: float = 0.95
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Return the Wilson score interval of the proportion ``k / n`` (NaN where ``n == 0``).

    It treats the ``n`` trials as independent, which several images of one patient are not.
    """
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low = np.where(n > 0, np.clip(centre - half, 0, 1), np.nan)
        high = np.where(n > 0, np.clip(centre + half, 0, 1), np.nan)
    if low.ndim == 0:
        return float(low), float(high)
    return low, high


def resampling_groups(df: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Return the bootstrap unit of each row and a sentence naming it.

    The unit is the row's ``split_group`` (the patient group the curated split keeps together);
    a row without one is its own unit (an image).

    Returns:
        ``(codes, description)``: int codes ``[N]`` in ``0..G-1`` and e.g.
        ``"patient groups (split_group): 505 groups for 731 images"``.
    """
    group = df["split_group"] if "split_group" in df.columns else pd.Series(pd.NA, index=df.index)
    has = group.notna().to_numpy()
    keys = np.where(has, "g:" + group.astype("string").fillna("").to_numpy(dtype=object),
                    "i:" + df["path"].astype(str).to_numpy(dtype=object))
    _, codes = np.unique(keys.astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    if has.all():
        text = f"patient groups (split_group): {n_groups} groups for {len(df)} images"
    elif not has.any():
        text = f"images (no split_group, patients unknown): {len(df)} images"
    else:
        text = (f"patient groups (split_group) where known, else images: {n_groups} units for {len(df)} images "
                f"({int((~has).sum())} without a group)")
    return codes.astype(np.int64), text


def bootstrap_weights(codes: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Return cluster-bootstrap weights ``[n_boot, N]``: how many times each row's unit was drawn.

    Each replicate draws G units (``codes`` has G distinct values) with replacement; a row's weight
    is the number of draws of its unit, so all images of one patient group count together.
    """
    codes = np.asarray(codes, dtype=np.int64)
    n_units = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    offsets = (np.arange(n_boot)[:, None] * n_units + draws).ravel()
    counts = np.bincount(offsets, minlength=n_boot * n_units).reshape(n_boot, n_units)
    return counts[:, codes].astype(np.float64)


def percentiles(reps: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Return the percentile interval ``(low, high)`` of bootstrap replicates ``[B, ...]`` (NaN replicates ignored)."""
    alpha = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        if np.isnan(reps).all(axis=0).any():
            lo = np.full(reps.shape[1:], np.nan)
            hi = lo.copy()
            ok = ~np.isnan(reps).all(axis=0)
            lo[ok] = np.nanquantile(reps[:, ok], alpha, axis=0)
            hi[ok] = np.nanquantile(reps[:, ok], 1 - alpha, axis=0)
            return lo, hi
        return np.nanquantile(reps, alpha, axis=0), np.nanquantile(reps, 1 - alpha, axis=0)


def mean_interval(values: np.ndarray, units: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``values`` (one per row of ``units``; NaN left out) and its bootstrap interval over patient groups.

    ``units`` holds the rows' ``path`` and ``split_group`` (:func:`resampling_groups`). Returns
    ``(mean, low, high)``.
    """
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values)
    codes, _ = resampling_groups(units.loc[ok] if isinstance(units, pd.DataFrame) else units)
    if not ok.any():
        return np.nan, np.nan, np.nan
    w = bootstrap_weights(codes, n_boot, seed)
    reps = safe_ratio(w @ values[ok], w.sum(axis=1))
    lo, hi = percentiles(reps[:, None], confidence)
    return float(values[ok].mean()), float(lo[0]), float(hi[0])


def interval_text(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """Format ``0.873 [0.848, 0.895]``; an empty string when the estimate is NaN, no brackets without an interval."""
    if estimate is None or not np.isfinite(estimate):
        return ""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


# ---------------------------------------------------------------------------------------------
# Tests


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Return McNemar's exact test of two classifiers on the same images.

    Only discordant images count: ``b`` = right by A and wrong by B, ``c`` = wrong by A and right by B.
    Under "equal accuracy" each discordant image is a fair coin, so the two-sided p-value is
    ``min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))``.

    Returns:
        ``{"only_a": b, "only_b": c, "p_value": p}`` (``p = 1`` when there is no discordant image).
    """
    a, b_ = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 0.5
    return {"only_a": float(b), "only_b": float(c), "p_value": min(1.0, 2 * tail)}


# ---------------------------------------------------------------------------------------------
# The summary a run writes into metrics.json


def _number(value: float) -> float | None:
    """A JSON-ready float: NaN (an undefined ratio) becomes None, written as ``null``."""
    value = float(value)
    return None if math.isnan(value) else value


def summary(predictions: pd.DataFrame) -> dict[str, Any]:
    """Return the figures a run writes into ``metrics.json`` for one split's predictions.

    Args:
        predictions: a predictions table (:mod:`cxr_utils.predictions`).

    Returns:
        A JSON-ready dict: ``n``, ``accuracy``, ``balanced_accuracy`` (mean recall), ``macro_f1``,
        ``cross_entropy`` (unsmoothed, probabilities clipped as Keras clips them), ``recall`` and
        ``precision`` per class, and ``confusion`` (rows actual, columns predicted, in
        :data:`cxr_utils.CLASSES` order). An undefined ratio (a class never predicted) is ``None``.
    """
    y, probs = true_labels(predictions), probabilities(predictions)
    cm = confusion_matrix(y, predicted(predictions), K)
    m = metrics_from_confusion(cm)
    return {
        "n": int(len(y)),
        "accuracy": _number(m["accuracy"]),
        "balanced_accuracy": _number(np.nanmean(m["recall"]) if np.isfinite(m["recall"]).any() else np.nan),
        "macro_f1": _number(m["macro_f1"]),
        "cross_entropy": _number(image_losses(y, probs, eps=0.0).mean()),
        "recall": {c: _number(v) for c, v in zip(CLASSES, m["recall"], strict=True)},
        "precision": {c: _number(v) for c, v in zip(CLASSES, m["precision"], strict=True)},
        "confusion": cm.tolist(),
    }
