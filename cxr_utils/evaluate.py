"""Evaluate a run from its test predictions: the paper's numbers, per-class metrics, and honest intervals.

A run writes ``predictions_test.csv`` with the columns :data:`PREDICTION_COLUMNS` (``path, label,
split_group, p_COVID-19, p_Normal, p_Pneumonia``). Everything here starts from that table, so a
lesson can recompute every figure without weights or TensorFlow graphs:

- :func:`evaluate_predictions` returns a :class:`Report`: the confusion matrix laid out as the
  paper's Table 5, accuracy, the paper's precision/recall (Keras' ``Precision()``/``Recall()``:
  micro-averaged at threshold 0.5 on one-hot targets), per-class precision, recall (sensitivity),
  specificity and F1 with macro averages, the paper's Table 4 (mean predicted probability of the
  true class), one-vs-rest ROC AUC, a reliability table and the expected calibration error.
- Every figure has a 95 % **bootstrap interval over patients**: whole ``split_group`` s (the patient
  groups the curation split by) are resampled with replacement, so the several images of one patient
  move together; an image without a group is its own group. Proportions also get a **Wilson
  interval**, which treats images as independent (narrower when patients repeat).
- :func:`compare_with_paper` puts the paper's figures next to ours, each with its interval.
- :func:`paired_comparison` compares two runs on the same test images: McNemar's exact test and a
  paired bootstrap of the accuracy difference over patient groups.
- :func:`external_images`, :func:`predict_paths` and :func:`external_summary` evaluate a trained
  model on images from another collection (``CXR_EXTERNAL_DIR``).

The bootstrap is vectorised: each replicate is a vector of image weights (how often the image's
group was drawn), and every statistic is a weighted sum, so 2,000 replicates of everything take a
few seconds in NumPy. Plotting functions at the end draw the figures of lesson 07.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cxr_utils import CLASSES, paper
from cxr_utils.plots import CLASS_COLOURS

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
"""The probability columns of a predictions file, in the order of :data:`cxr_utils.CLASSES`."""

PREDICTION_COLUMNS: tuple[str, ...] = ("path", "label", "split_group", *PROB_COLUMNS)
"""Columns of ``predictions_{val,test}.csv`` written by a training run."""

SCRIPT_LABEL_SMOOTHING = 0.12
"""The smoothing of the script's loss, used to recompute the loss the paper reports."""

K = len(CLASSES)
_CHUNK = 250  # bootstrap replicates computed at once (bounds memory to ~_CHUNK x images floats)


class PredictionsError(ValueError):
    """A predictions table is missing, lacks a column or holds values outside what a run writes."""


# ---------------------------------------------------------------------------------------------
# Reading predictions


def validate_predictions(df: pd.DataFrame, where: str = "<DataFrame>") -> pd.DataFrame:
    """Check a predictions table and return it with a clean ``split_group`` (missing -> NaN).

    Raises:
        PredictionsError: a column of :data:`PREDICTION_COLUMNS` is missing, a label is not one of
            :data:`cxr_utils.CLASSES`, a probability is not a number in [0, 1], or the table is empty.
    """
    fix = "write it with cxr_utils.train (columns " + ", ".join(PREDICTION_COLUMNS) + ")"
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise PredictionsError(f"Predictions '{where}' lack the column(s) {missing}; {fix}.")
    if len(df) == 0:
        raise PredictionsError(f"Predictions '{where}' have no rows; {fix}.")
    bad = sorted(set(df["label"].astype(str)) - set(CLASSES))
    if bad:
        raise PredictionsError(f"Predictions '{where}' have label(s) {bad} outside {list(CLASSES)}; {fix}.")
    p = df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise PredictionsError(f"Predictions '{where}' have probabilities that are not numbers in [0, 1]; {fix}.")
    out = df.copy()
    group = out["split_group"].astype("string").str.strip()
    out["split_group"] = group.where(group.notna() & (group != ""), other=pd.NA)
    return out


def load_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a ``predictions_*.csv`` file (see :func:`validate_predictions`).

    Raises:
        PredictionsError: the file does not exist (the message says how to produce it) or is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(
            f"Predictions file '{path}' not found; train a run (lesson 06, cxr_utils.train) or copy its "
            "predictions_test.csv into results/<recipe>/."
        )
    df = pd.read_csv(path, dtype={"path": str, "label": str, "split_group": str})
    return validate_predictions(df, str(path))


def true_labels(df: pd.DataFrame) -> np.ndarray:
    """Return the ``label`` column as int indices into :data:`cxr_utils.CLASSES`."""
    index = {c: i for i, c in enumerate(CLASSES)}
    return np.array([index[str(v)] for v in df["label"]], dtype=np.int64)


def probabilities(df: pd.DataFrame) -> np.ndarray:
    """Return the predicted probabilities ``[N, 3]`` (float64) in class order."""
    return df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)


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


# ---------------------------------------------------------------------------------------------
# Metrics (every function accepts weights: 1-D [N] or a batch of replicates [B, N])


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


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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
        "accuracy": _ratio(tp.sum(axis=-1), total),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }
    for name in ("precision", "recall", "specificity", "f1"):
        v = out[name]
        defined = np.isfinite(v)
        out[f"macro_{name}"] = _ratio(np.where(defined, v, 0).sum(axis=-1), defined.sum(axis=-1))
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
    return _squeeze(_ratio(tp, called), weights), _squeeze(_ratio(tp, n), weights)


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
    auc = _ratio((wp * (below + 0.5 * wn)).sum(axis=1), wp.sum(axis=1) * wn.sum(axis=1))
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
    return _squeeze(_ratio(gap, w.sum(axis=1)), weights)


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


def image_losses(y_true: np.ndarray, probs: np.ndarray, eps: float = SCRIPT_LABEL_SMOOTHING) -> np.ndarray:
    """Return each image's cross-entropy with Keras' label smoothing ``eps`` (the loss the paper reports)."""
    from cxr_utils import losses  # imports Keras: only when a loss is asked for

    return losses.cross_entropy(losses.smoothed_targets(y_true, eps, "keras", len(CLASSES)), probs)


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
# All statistics of one prediction table, for the point estimate and every bootstrap replicate


@dataclass
class _Data:
    y: np.ndarray
    probs: np.ndarray
    pred: np.ndarray
    loss: np.ndarray
    n_bins: int


def _statistics(w: np.ndarray, d: _Data) -> dict[str, np.ndarray]:
    """Return every statistic for weights ``w`` ``[B, N]``: arrays ``[B]`` or ``[B, K]``."""
    cm = confusion_matrix(d.y, d.pred, K, w)
    cm = cm if cm.ndim == 3 else cm[None]
    out = {f"m:{k}": v for k, v in metrics_from_confusion(cm).items()}
    total = w.sum(axis=1)
    out["keras_precision"], out["keras_recall"] = keras_micro_precision_recall(d.y, d.probs, weights=w)
    out["loss"] = _ratio(w @ d.loss, total)
    out["ece"] = expected_calibration_error(d.y, d.probs, d.n_bins, weights=w)
    covid = (d.y == 0).astype(np.float64)
    wc = w * covid
    out["covid_accuracy"] = _ratio(wc @ (d.pred == d.y), wc.sum(axis=1))
    out["covid_keras_precision"], out["covid_keras_recall"] = keras_micro_precision_recall(d.y, d.probs, weights=wc)
    out["covid_loss"] = _ratio(wc @ d.loss, wc.sum(axis=1))
    onehot = np.eye(K)[d.y]
    p_true = d.probs[np.arange(len(d.y)), d.y]
    out["p_true"] = _ratio(w @ (onehot * p_true[:, None]), w @ onehot)
    auc = np.stack([np.atleast_1d(roc_auc(d.y == k, d.probs[:, k], w)) for k in range(K)], axis=1)
    out["auc"] = auc
    defined = np.isfinite(auc)
    out["macro_auc"] = _ratio(np.where(defined, auc, 0).sum(axis=1), defined.sum(axis=1))
    return out


def _bootstrap(d: _Data, codes: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Return every statistic for ``n_boot`` cluster-bootstrap replicates (computed in chunks)."""
    w_all = bootstrap_weights(codes, n_boot, seed)
    parts = [_statistics(w_all[i : i + _CHUNK], d) for i in range(0, n_boot, _CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _percentiles(reps: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
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


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    """Everything lesson 07 shows about one run's test predictions.

    Tables (DataFrames) carry ``estimate``, ``ci_low``, ``ci_high`` (percentile bootstrap over
    :attr:`resample_unit`) and, for proportions, ``wilson_low``, ``wilson_high`` (images independent).
    """

    name: str
    n_images: int
    n_units: int
    resample_unit: str
    n_boot: int
    confidence: float
    confusion: pd.DataFrame
    """Counts, rows actual, columns predicted, laid out as the paper's Table 5."""
    confusion_normalised: pd.DataFrame
    """Each row divided by its total: the share of each actual class predicted as each class."""
    overall: pd.DataFrame
    """Accuracy, the paper's Keras precision/recall, macro averages, AUC, loss and ECE."""
    per_class: pd.DataFrame
    """Index (label, metric): precision, recall (sensitivity), specificity, F1, AUC per class."""
    covid_subset: pd.DataFrame
    """The paper's Table 3 row "COVID-19 (test)": accuracy, Keras precision/recall and loss on COVID-19 images."""
    true_class_probability: pd.DataFrame
    """The paper's Table 4: mean p(true class) per class, with the paper's image-level interval and ours."""
    calibration: pd.DataFrame
    """The reliability table of :func:`calibration_table`."""
    roc: dict[str, tuple[np.ndarray, np.ndarray]] = field(repr=False)
    """Per class, ``(false positive rate, true positive rate)`` of the one-vs-rest ROC curve."""
    replicates: dict[str, np.ndarray] = field(repr=False)
    """The bootstrap replicates of every statistic (for further analysis)."""

    def figure(self, metric: str, label: str | None = None) -> pd.Series:
        """Return the row of ``metric`` (``overall``) or ``(label, metric)`` (``per_class``)."""
        return self.overall.loc[metric] if label is None else self.per_class.loc[(label, metric)]


def _row(estimate, lo, hi, k=np.nan, n=np.nan, confidence=0.95) -> dict:
    wl, wh = wilson_interval(k, n, confidence) if np.isfinite(n) else (np.nan, np.nan)
    return {"estimate": float(estimate), "ci_low": float(lo), "ci_high": float(hi),
            "wilson_low": wl, "wilson_high": wh, "k": k, "n": n}


def evaluate_predictions(
    df: pd.DataFrame, n_boot: int = 2000, seed: int = 0, name: str = "", confidence: float = 0.95, n_bins: int = 10
) -> Report:
    """Compute every figure of lesson 07 for one run's predictions, with intervals.

    Args:
        df: a predictions table (:data:`PREDICTION_COLUMNS`), e.g. from :func:`load_predictions`.
        n_boot: bootstrap replicates (resampling patient groups; see :func:`resampling_groups`).
        seed: seed of the bootstrap.
        name: the run's name (e.g. the recipe), kept in the report.
        confidence: level of every interval.
        n_bins: bins of the reliability table and the ECE.

    Returns:
        A :class:`Report`.
    """
    df = validate_predictions(df)
    y, probs = true_labels(df), probabilities(df)
    pred = probs.argmax(axis=1)
    d = _Data(y, probs, pred, image_losses(y, probs), n_bins)
    codes, unit = resampling_groups(df)
    point = _statistics(np.ones((1, len(y))), d)
    reps = _bootstrap(d, codes, n_boot, seed)
    ci = {k: _percentiles(v, confidence) for k, v in reps.items()}

    def est(key, j=None):
        v, (lo, hi) = point[key][0], ci[key]
        return (v, lo, hi) if j is None else (v[j], lo[j], hi[j])

    cm = confusion_matrix(y, pred, K)
    labels = pd.Index(CLASSES, name="actual")
    confusion = pd.DataFrame(cm, index=labels, columns=pd.Index(CLASSES, name="predicted"))
    confusion_normalised = confusion.div(confusion.sum(axis=1).replace(0, np.nan), axis=0)

    above = probs > 0.5
    tp = int(above[np.arange(len(y)), y].sum())
    called = int(above.sum())
    n, correct = len(y), int((pred == y).sum())
    overall = {
        "accuracy": _row(*est("m:accuracy"), correct, n, confidence),
        "precision (Keras micro, 0.5)": _row(*est("keras_precision"), tp, called, confidence),
        "recall (Keras micro, 0.5)": _row(*est("keras_recall"), tp, n, confidence),
        "macro precision": _row(*est("m:macro_precision")),
        "macro recall": _row(*est("m:macro_recall")),
        "macro specificity": _row(*est("m:macro_specificity")),
        "macro F1": _row(*est("m:macro_f1")),
        "macro AUC (one-vs-rest)": _row(*est("macro_auc")),
        "loss (cross-entropy, smoothing 0.12)": _row(*est("loss")),
        "expected calibration error": _row(*est("ece")),
    }
    overall = pd.DataFrame.from_dict(overall, orient="index").rename_axis("metric")

    tp_k = np.diag(cm)
    actual, predicted = cm.sum(axis=1), cm.sum(axis=0)
    per_class = {}
    for j, label in enumerate(CLASSES):
        neg = n - actual[j]
        tn = neg - (predicted[j] - tp_k[j])
        per_class[(label, "precision")] = _row(*est("m:precision", j), tp_k[j], predicted[j], confidence)
        per_class[(label, "recall")] = _row(*est("m:recall", j), tp_k[j], actual[j], confidence)
        per_class[(label, "specificity")] = _row(*est("m:specificity", j), tn, neg, confidence)
        per_class[(label, "F1")] = _row(*est("m:f1", j))
        per_class[(label, "AUC")] = _row(*est("auc", j))
    per_class = pd.DataFrame.from_dict(per_class, orient="index")
    per_class.index = pd.MultiIndex.from_tuples(per_class.index, names=["label", "metric"])

    covid = y == 0
    c_above = above[covid]
    c_tp, c_called, c_n = int(c_above[:, 0].sum()), int(c_above.sum()), int(covid.sum())
    covid_subset = pd.DataFrame.from_dict({
        "accuracy": _row(*est("covid_accuracy"), int((pred[covid] == 0).sum()), c_n, confidence),
        "precision (Keras micro, 0.5)": _row(*est("covid_keras_precision"), c_tp, c_called, confidence),
        "recall (Keras micro, 0.5)": _row(*est("covid_keras_recall"), c_tp, c_n, confidence),
        "loss (cross-entropy, smoothing 0.12)": _row(*est("covid_loss")),
    }, orient="index").rename_axis("metric")

    p_true = probs[np.arange(n), y]
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rows = []
    for j, label in enumerate(CLASSES):
        v = p_true[y == j]
        m, lo, hi = est("p_true", j)
        half = z * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan
        rows.append({"label": label, "estimate": m, "images_low": m - half, "images_high": m + half,
                     "ci_low": lo, "ci_high": hi, "images": len(v),
                     "units": len(np.unique(codes[y == j]))})
    tcp = pd.DataFrame(rows).set_index("label")

    from sklearn.metrics import roc_curve

    roc = {}
    for j, label in enumerate(CLASSES):
        if 0 < (y == j).sum() < n:
            fpr, tpr, _ = roc_curve(y == j, probs[:, j])
            roc[label] = (fpr, tpr)

    return Report(name=name, n_images=n, n_units=int(codes.max()) + 1, resample_unit=unit, n_boot=n_boot,
                  confidence=confidence, confusion=confusion, confusion_normalised=confusion_normalised,
                  overall=overall, per_class=per_class, covid_subset=covid_subset, true_class_probability=tcp,
                  calibration=calibration_table(y, probs, n_bins), roc=roc, replicates=reps)


# ---------------------------------------------------------------------------------------------
# The paper's figures next to ours


def _paper_figures(confidence: float = 0.95) -> pd.DataFrame:
    """Return the paper's test figures with Wilson intervals from its counts (images assumed independent).

    Table 5 gives exact counts. For the Keras precision/recall of Table 3 the counts are implied:
    ``TP = round(recall x N)``, ``calls = round(TP / precision)`` (740 test images, 100 of them COVID-19).
    """
    cm = paper.CONFUSION.to_numpy()
    n = int(cm.sum())
    m = metrics_from_confusion(cm)
    res, tcp = paper.RESULTS, paper.TRUE_CLASS_PROBABILITY
    rows = {}

    def add(key, value, k=np.nan, n_=np.nan, lo=np.nan, hi=np.nan):
        if np.isfinite(n_):
            lo, hi = wilson_interval(k, n_, confidence)
        rows[key] = {"published": float(value), "published_low": lo, "published_high": hi}

    add(("overall", "accuracy"), res.at["test", "accuracy"], np.trace(cm), n)
    tp = round(res.at["test", "recall"] * n)
    add(("overall", "precision (Keras micro, 0.5)"), res.at["test", "precision"], tp,
        round(tp / res.at["test", "precision"]))
    add(("overall", "recall (Keras micro, 0.5)"), res.at["test", "recall"], tp, n)
    for metric in ("precision", "recall", "specificity", "F1"):
        add(("overall", f"macro {metric}"), m[f"macro_{metric.lower()}"])
    add(("overall", "loss (cross-entropy, smoothing 0.12)"), res.at["test", "loss"])
    n_c = int(cm[0].sum())
    add(("COVID-19 (test)", "accuracy"), res.at["COVID-19 (test)", "accuracy"],
        round(res.at["COVID-19 (test)", "accuracy"] * n_c), n_c)
    tp_c = round(res.at["COVID-19 (test)", "recall"] * n_c)
    add(("COVID-19 (test)", "precision (Keras micro, 0.5)"), res.at["COVID-19 (test)", "precision"], tp_c,
        round(tp_c / res.at["COVID-19 (test)", "precision"]))
    add(("COVID-19 (test)", "recall (Keras micro, 0.5)"), res.at["COVID-19 (test)", "recall"], tp_c, n_c)
    add(("COVID-19 (test)", "loss (cross-entropy, smoothing 0.12)"), res.at["COVID-19 (test)", "loss"])
    actual, predicted, tp_k = cm.sum(1), cm.sum(0), np.diag(cm)
    for j, label in enumerate(CLASSES):
        neg = n - actual[j]
        add((label, "precision"), m["precision"][j], tp_k[j], predicted[j])
        add((label, "recall"), m["recall"][j], tp_k[j], actual[j])
        add((label, "specificity"), m["specificity"][j], neg - (predicted[j] - tp_k[j]), neg)
        add((label, "F1"), m["f1"][j])
        add((label, "mean p(true class)"), tcp.at[label, "mean"], lo=tcp.at[label, "ci_low"],
            hi=tcp.at[label, "ci_high"])
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["group", "figure"])
    return out


def _report_figures(report: Report) -> pd.DataFrame:
    """Return a report's figures indexed like :func:`_paper_figures` (estimate, ci_low, ci_high)."""
    cols = ["estimate", "ci_low", "ci_high"]
    parts = {("overall", k): v for k, v in report.overall[cols].iterrows()}
    parts.update({("COVID-19 (test)", k): v for k, v in report.covid_subset[cols].iterrows()})
    parts.update({(lab, met): v for (lab, met), v in report.per_class[cols].iterrows()})
    for lab, v in report.true_class_probability[cols].iterrows():
        parts[(lab, "mean p(true class)")] = v
    out = pd.DataFrame.from_dict(parts, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["group", "figure"])
    return out


def compare_with_paper(reports: Mapping[str, Report], confidence: float = 0.95) -> pd.DataFrame:
    """Return the paper's figures next to each run's, each with its interval.

    Columns: ``published``, ``published_low``, ``published_high`` (the paper's figure; Wilson on the
    paper's counts, image-level since the paper has no patient ids; its own interval for Table 4), then
    per run ``<name>``,
    ``<name>_low``, ``<name>_high`` (bootstrap over patients) and ``published in <name> CI`` (does the
    paper's figure fall inside our interval?). Rows: index ``(group, figure)``, e.g.
    ``("overall", "accuracy")``, ``("COVID-19 (test)", "recall (Keras micro, 0.5)")``, ``("Normal", "recall")``.
    """
    table = _paper_figures(confidence)
    for name, rep in reports.items():
        ours = _report_figures(rep)
        table = table.join(ours.rename(columns={"estimate": name, "ci_low": f"{name}_low",
                                                "ci_high": f"{name}_high"}), how="outer")
        inside = (table["published"] >= table[f"{name}_low"]) & (table["published"] <= table[f"{name}_high"])
        table[f"published in {name} CI"] = inside.where(table["published"].notna() & table[f"{name}_low"].notna())
    order = ["overall", "COVID-19 (test)", *CLASSES]
    return table.sort_index(key=lambda idx: idx.map(order.index) if idx.name == "group" else idx.map(_fig_rank))


_FIGURE_ORDER = ["accuracy", "precision (Keras micro, 0.5)", "recall (Keras micro, 0.5)", "macro precision",
                 "macro recall", "macro specificity", "macro F1", "macro AUC (one-vs-rest)",
                 "loss (cross-entropy, smoothing 0.12)", "expected calibration error", "precision", "recall",
                 "specificity", "F1", "AUC", "mean p(true class)"]


def _fig_rank(name: str) -> int:
    return _FIGURE_ORDER.index(name) if name in _FIGURE_ORDER else len(_FIGURE_ORDER)


def interval_text(estimate: float, low: float, high: float, digits: int = 3) -> str:
    """Format ``0.873 [0.848, 0.895]``; an empty string when the estimate is NaN, no brackets without an interval."""
    if estimate is None or not np.isfinite(estimate):
        return ""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def format_comparison(table: pd.DataFrame, names: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """Return :func:`compare_with_paper`'s table as text: ``figure [low, high]`` per column, and yes/no."""
    out = pd.DataFrame(index=table.index)
    cols = ["published", "published_low", "published_high"]
    out["published"] = [interval_text(*r, digits=digits) for r in table[cols].to_numpy()]
    for name in names:
        cols = [name, f"{name}_low", f"{name}_high"]
        out[name] = [interval_text(*r, digits=digits) for r in table[cols].to_numpy()]
        inside = table[f"published in {name} CI"]
        out[f"published in {name} CI"] = ["" if pd.isna(v) else ("yes" if v else "no") for v in inside]
    return out


# ---------------------------------------------------------------------------------------------
# Two runs on the same test images


def paired_comparison(
    df_a: pd.DataFrame, df_b: pd.DataFrame, names: tuple[str, str] = ("A", "B"),
    n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> pd.Series:
    """Compare two runs' predictions on the same test images.

    Rows are matched on ``path``; both tables must hold the same images (same labels).

    Returns:
        A Series: images, units (patient groups), the four agreement counts, accuracy of each run,
        the difference ``B - A`` with its paired bootstrap interval over patient groups (both runs
        resampled with the same draws), the share of replicates where B beats A, and McNemar's exact p.

    Raises:
        PredictionsError: the two tables do not hold the same images or labels.
    """
    a, b = validate_predictions(df_a), validate_predictions(df_b)
    if set(a["path"]) != set(b["path"]):
        raise PredictionsError(
            f"{names[0]} and {names[1]} were evaluated on different images ({len(a)} vs {len(b)}, "
            f"{len(set(a['path']) ^ set(b['path']))} not shared); predict the same test split with both runs."
        )
    m = a.merge(b, on="path", suffixes=("_a", "_b"))
    if (m["label_a"] != m["label_b"]).any():
        raise PredictionsError(f"{names[0]} and {names[1]} give different labels to the same image; "
                               "both must come from the same manifest.")
    frame = pd.DataFrame({"path": m["path"], "split_group": m["split_group_a"]})
    codes, unit = resampling_groups(frame)
    y = true_labels(m.rename(columns={"label_a": "label"}))
    pa = m[[f"{c}_a" for c in PROB_COLUMNS]].to_numpy(dtype=np.float64).argmax(axis=1)
    pb = m[[f"{c}_b" for c in PROB_COLUMNS]].to_numpy(dtype=np.float64).argmax(axis=1)
    ca, cb = pa == y, pb == y
    w = bootstrap_weights(codes, n_boot, seed)
    diff = (w @ (cb.astype(float) - ca.astype(float))) / w.sum(axis=1)
    lo, hi = _percentiles(diff[:, None], confidence)
    test = mcnemar_exact(ca, cb)
    na, nb = names
    return pd.Series({
        "images": len(m), "resampled": unit,
        "both right": int((ca & cb).sum()), f"only {na} right": int(test["only_a"]),
        f"only {nb} right": int(test["only_b"]), "both wrong": int((~ca & ~cb).sum()),
        f"accuracy {na}": ca.mean(), f"accuracy {nb}": cb.mean(),
        f"difference ({nb} - {na})": cb.mean() - ca.mean(), "difference ci_low": float(lo[0]),
        "difference ci_high": float(hi[0]), f"share of replicates where {nb} > {na}": float((diff > 0).mean()),
        "McNemar exact p": test["p_value"],
    }, name=f"{nb} vs {na}")


# ---------------------------------------------------------------------------------------------
# Outside the sources: an external collection


EXTERNAL_FOLDERS: dict[str, str] = {"COVID": "COVID-19", "Normal": "Normal"}
"""Folder name -> class, under ``COVID-19_Radiography_Dataset/`` of ``CXR_EXTERNAL_DIR``."""


def external_images(root: str | os.PathLike[str]) -> pd.DataFrame:
    """List the external set: columns ``path`` (relative to ``root``), ``label``, ``split_group`` (NaN).

    ``root`` is ``CXR_EXTERNAL_DIR``: ``COVID-19_Radiography_Dataset/{COVID,Normal}/*.png``. The set has no
    patient ids, so its bootstrap resamples images.

    Raises:
        FileNotFoundError: the folders are missing (the message names ``root`` and what it must hold).
    """
    root = Path(root)
    rows = []
    for folder, label in EXTERNAL_FOLDERS.items():
        d = root / "COVID-19_Radiography_Dataset" / folder
        if not d.is_dir():
            raise FileNotFoundError(
                f"'{d}' not found: CXR_EXTERNAL_DIR must name the external set's folder, which holds "
                "COVID-19_Radiography_Dataset/COVID and .../Normal (see its PROVENANCE.md)."
            )
        rows += [{"path": str(p.relative_to(root)), "label": label} for p in sorted(d.glob("*.png"))]
    df = pd.DataFrame(rows)
    df["split_group"] = pd.NA
    return df


def _complete(run: Path) -> bool:
    """A usable run: complete (:func:`cxr_utils.train.is_complete`) and with its ``config.json``."""
    from cxr_utils.train import is_complete

    return is_complete(run) and (run / "config.json").is_file()


def find_run(recipe: str, runs_root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the complete run folder of ``recipe``: ``<runs>/<recipe>`` itself, else the newest ``<recipe>-*``.

    Complete means ``metrics.json`` (written last by a run, marked complete), ``best.keras`` and
    ``config.json`` are all there. Returns None when there is no such folder.
    """
    from cxr_utils import paths

    root = Path(runs_root) if runs_root else paths.runs_dir()
    if _complete(root / recipe):
        return root / recipe
    runs = [p for p in root.glob(f"{recipe}-*") if _complete(p)] if root.is_dir() else []
    return max(runs, key=lambda p: (p / "metrics.json").stat().st_mtime) if runs else None


def run_preprocessing(run_dir: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(image_size, channels)`` of a run from its ``config.json`` (defaults 80 and 3, the paper's)."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    flat = {**config, **{k: v for sub in config.values() if isinstance(sub, dict) for k, v in sub.items()}}
    return int(flat.get("image_size", 80)), int(flat.get("channels", 3))


def predict_paths(
    model, paths: Sequence[str | os.PathLike[str]], image_size: int, channels: int, batch_size: int = 64
) -> np.ndarray:
    """Predict images from arbitrary files the way the test split is predicted.

    Each file is decoded with :func:`cxr_utils.images.read_image` (through :func:`cxr_utils.data.decode_images`),
    resized to ``image_size`` squared, given ``channels`` channels and scaled to [0, 1], as
    :func:`cxr_utils.data.make_dataset` feeds the test split.

    Returns:
        The model's probabilities ``[N, 3]``.
    """
    from cxr_utils.data import decode_images

    x = decode_images(paths, int(image_size), int(channels), workers=1, progress=False)
    return np.asarray(model.predict(x.astype(np.float32) / 255.0, batch_size=batch_size, verbose=0))


def predictions_frame(files: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Return ``files`` (path, label, split_group) with the probability columns added (the run's CSV format)."""
    out = files[["path", "label", "split_group"]].copy()
    for j, col in enumerate(PROB_COLUMNS):
        out[col] = np.asarray(probs)[:, j]
    return out


def _called(df: pd.DataFrame) -> np.ndarray:
    return probabilities(df).argmax(axis=1)


def external_summary(
    in_source: pd.DataFrame, external: pd.DataFrame, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Return COVID-19 recall and the Normal figures in-source (test split) and on the external set.

    Rows: ``COVID-19 recall`` (COVID-19 images called COVID-19), ``Normal specificity for COVID-19``
    (Normal images *not* called COVID-19) and ``Normal recall`` (Normal images called Normal).
    Columns per set (``test``, ``external``): estimate, Wilson interval, bootstrap interval (patient
    groups on the test split; images on the external set, whose patients are unknown), k and n.
    """
    rows = []
    for set_name, df in (("test", in_source), ("external", external)):
        df = validate_predictions(df)
        y, pred = true_labels(df), _called(df)
        codes, _ = resampling_groups(df)
        w = bootstrap_weights(codes, n_boot, seed)
        for figure, cls, hit in (("COVID-19 recall", 0, pred == 0), ("Normal specificity for COVID-19", 1, pred != 0),
                                 ("Normal recall", 1, pred == 1)):
            mask = (y == cls).astype(float)
            k, n = int((hit & (y == cls)).sum()), int(mask.sum())
            reps = _ratio((w * mask) @ hit.astype(float), w @ mask)
            lo, hi = _percentiles(reps[:, None], confidence)
            wl, wh = wilson_interval(k, n, confidence)
            rows.append({"figure": figure, "set": set_name, "estimate": k / n if n else np.nan,
                         "wilson_low": wl, "wilson_high": wh, "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                         "k": k, "n": n})
    return pd.DataFrame(rows).set_index(["figure", "set"])


def called_as(df: pd.DataFrame) -> pd.DataFrame:
    """Return, per actual class, the share of images called each class (rows actual, columns called)."""
    df = validate_predictions(df)
    cm = confusion_matrix(true_labels(df), _called(df), K)
    t = pd.DataFrame(cm, index=pd.Index(CLASSES, name="actual"), columns=pd.Index(CLASSES, name="called"))
    return t.loc[t.sum(axis=1) > 0]


# ---------------------------------------------------------------------------------------------
# Figures


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
