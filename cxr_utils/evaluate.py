"""Every figure of one run's test predictions, with honest intervals, in one :class:`Report`.

A run writes ``predictions_test.csv`` (:mod:`cxr_utils.predictions`); :func:`evaluate_predictions`
turns it into a :class:`Report`: the confusion matrix laid out as the paper's Table 5, accuracy,
the paper's precision/recall (Keras' ``Precision()``/``Recall()``: micro-averaged at threshold 0.5
on one-hot targets), per-class precision, recall (sensitivity), specificity and F1 with macro
averages, the paper's Table 4 (mean predicted probability of the true class), one-vs-rest ROC AUC,
a reliability table and the expected calibration error.

Every figure has a 95 % **bootstrap interval over patients** and, for proportions, a **Wilson
interval** (images independent); both come from :mod:`cxr_utils.metrics`. The comparisons with the
paper and between runs are in :mod:`cxr_utils.compare`, the external set in
:mod:`cxr_utils.external`, the figures in :mod:`cxr_utils.plots`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from cxr_utils import CLASSES
from cxr_utils.metrics import (
    K,
    bootstrap_weights,
    calibration_table,
    confusion_matrix,
    expected_calibration_error,
    image_losses,
    interval_text,
    keras_micro_precision_recall,
    metrics_from_confusion,
    percentiles,
    resampling_groups,
    roc_auc,
    safe_ratio,
    wilson_interval,
)
from cxr_utils.predictions import probabilities, true_labels, validate_predictions

_CHUNK = 250  # bootstrap replicates computed at once (bounds memory to ~_CHUNK x images floats)


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
    out["loss"] = safe_ratio(w @ d.loss, total)
    out["ece"] = expected_calibration_error(d.y, d.probs, d.n_bins, weights=w)
    covid = (d.y == 0).astype(np.float64)
    wc = w * covid
    out["covid_accuracy"] = safe_ratio(wc @ (d.pred == d.y), wc.sum(axis=1))
    out["covid_keras_precision"], out["covid_keras_recall"] = keras_micro_precision_recall(d.y, d.probs, weights=wc)
    out["covid_loss"] = safe_ratio(wc @ d.loss, wc.sum(axis=1))
    onehot = np.eye(K)[d.y]
    p_true = d.probs[np.arange(len(d.y)), d.y]
    out["p_true"] = safe_ratio(w @ (onehot * p_true[:, None]), w @ onehot)
    auc = np.stack([np.atleast_1d(roc_auc(d.y == k, d.probs[:, k], w)) for k in range(K)], axis=1)
    out["auc"] = auc
    defined = np.isfinite(auc)
    out["macro_auc"] = safe_ratio(np.where(defined, auc, 0).sum(axis=1), defined.sum(axis=1))
    return out


def _bootstrap(d: _Data, codes: np.ndarray, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Return every statistic for ``n_boot`` cluster-bootstrap replicates (computed in chunks)."""
    w_all = bootstrap_weights(codes, n_boot, seed)
    parts = [_statistics(w_all[i : i + _CHUNK], d) for i in range(0, n_boot, _CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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


def figures_table(reports: dict[str, Report], figures: tuple[str, ...] = ("accuracy", "macro recall", "recall")
                  ) -> pd.DataFrame:
    """Put runs side by side: one row per report, one column per figure, each ``estimate [ci_low, ci_high]``.

    Args:
        reports: run name -> its :class:`Report`.
        figures: ``overall`` metrics (``"accuracy"``, ``"macro recall"``, ...); a per-class metric
            (``"recall"``, ``"precision"``, ...) gives one column per class, ``"recall COVID-19"`` etc.

    Returns:
        A table of text (:func:`cxr_utils.metrics.interval_text`), index the run names.
    """
    rows = {}
    for name, rep in reports.items():
        row = {}
        for metric in figures:
            if metric in rep.overall.index:
                row[metric] = rep.figure(metric)
            else:
                row.update({f"{metric} {c}": rep.figure(metric, c) for c in CLASSES})
        rows[name] = {k: interval_text(v["estimate"], v["ci_low"], v["ci_high"]) for k, v in row.items()}
    return pd.DataFrame(rows).T


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
    ci = {k: percentiles(v, confidence) for k, v in reps.items()}

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

