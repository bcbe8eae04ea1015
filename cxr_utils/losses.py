"""Losses: cross-entropy, label smoothing (Keras' way and the paper's), and class weights.

The paper's script trains with ``keras.losses.CategoricalCrossentropy(label_smoothing=0.12)`` and
``class_weight={0: 10, 1: 3, 2: 1}``. This module writes out what those do, in NumPy, so a lesson can
check every number against Keras:

- :func:`smoothed_targets` turns labels into smoothed target vectors, ``scheme="keras"`` (``eps/N``
  added to every class, what the script trains with) or ``scheme="paper"`` (formula (2) of the
  paper: ``1 - eps`` on the true class, ``eps/(N-1)`` on each other class).
- :func:`cross_entropy` is the per-sample cross-entropy ``-sum_k t_k log p_k``, computed the way
  Keras computes it from probabilities (renormalised, clipped at ``keras.config.epsilon()``).
- :func:`paper_formula_3` is the paper's formula (3), which puts the targets *inside* the logarithm;
  it is not a cross-entropy (it is smallest when the prediction is uniform, whatever the label).
- :func:`keras_loss` returns the Keras loss for either smoothing scheme.
- :func:`class_weights` computes the paper's, inverse-frequency ("balanced") or effective-number
  (Cui et al. 2019) class weights from the manifest or from counts; :func:`loss_share` says how much
  of the total loss each class carries under given weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import keras
import numpy as np
import pandas as pd

from cxr_utils import CLASSES, paper

Scheme = Literal["keras", "paper"]
WeightScheme = Literal["paper", "balanced", "effective", "none"]

PAPER_CLASS_WEIGHTS: dict[int, float] = {0: 10.0, 1: 3.0, 2: 1.0}
"""The script's ``class_weight``: COVID-19 10, Normal 3, Pneumonia 1 (keyed by class index)."""


def _one_hot(y: np.ndarray | Sequence, num_classes: int | None) -> np.ndarray:
    """Return ``y`` as a float one-hot array ``[n, N]``; ``y`` is int labels ``[n]`` or one-hot ``[n, N]``."""
    y = np.asarray(y)
    if y.ndim == 2:
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"one-hot labels have {y.shape[1]} columns but num_classes={num_classes}")
        return y.astype(np.float64)
    if y.ndim != 1:
        raise ValueError(f"labels must be int class indices [n] or one-hot [n, N], got shape {y.shape}")
    n = len(CLASSES) if num_classes is None else num_classes
    if y.size and (y.min() < 0 or y.max() >= n):
        raise ValueError(f"class indices must lie in [0, {n - 1}], got {y.min()}..{y.max()}; pass num_classes=")
    return np.eye(n)[y.astype(int)]


def smoothed_targets(
    y: np.ndarray | Sequence, eps: float, scheme: Scheme = "keras", num_classes: int | None = None
) -> np.ndarray:
    """Return smoothed target vectors for labels ``y``.

    Args:
        y: int class indices ``[n]`` or one-hot rows ``[n, N]``.
        eps: the smoothing amount, in ``[0, 1]``.
        scheme: ``"keras"``: ``t = (1 - eps) * onehot + eps / N`` (true class ``1 - eps + eps/N``,
            every other class ``eps/N``), what ``CategoricalCrossentropy(label_smoothing=eps)`` does;
            ``"paper"``: formula (2), true class ``1 - eps``, every other class ``eps / (N - 1)``.
        num_classes: N when ``y`` holds indices (default ``len(CLASSES)`` = 3).

    Returns:
        float64 array ``[n, N]`` whose rows sum to 1.
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps}")
    onehot = _one_hot(y, num_classes)
    n_classes = onehot.shape[1]
    if scheme == "keras":
        return onehot * (1.0 - eps) + eps / n_classes
    if scheme == "paper":
        if n_classes < 2:
            raise ValueError("the paper's scheme needs at least 2 classes (it divides by N - 1)")
        return onehot * (1.0 - eps) + (1.0 - onehot) * eps / (n_classes - 1)
    raise ValueError(f"scheme must be 'keras' or 'paper', got {scheme!r}")


def keras_equivalent_smoothing(eps: float, scheme: Scheme, num_classes: int = len(CLASSES)) -> float:
    """Return the ``label_smoothing`` to give Keras so that it produces the targets of ``scheme`` with ``eps``.

    Keras' eps gives ``eps/N`` off the true class; the paper's gives ``eps/(N-1)``; they agree when
    ``eps_keras = eps_paper * N / (N - 1)`` (0.12 in the paper's formula is 0.18 for Keras, N = 3).
    """
    if scheme == "keras":
        return float(eps)
    if scheme == "paper":
        return float(eps) * num_classes / (num_classes - 1)
    raise ValueError(f"scheme must be 'keras' or 'paper', got {scheme!r}")


def keras_loss(eps: float = paper.LABEL_SMOOTHING, scheme: Scheme = "keras") -> keras.losses.Loss:
    """Return ``keras.losses.CategoricalCrossentropy`` whose targets are those of :func:`smoothed_targets`.

    ``scheme="keras"`` is the script's loss; ``scheme="paper"`` trains on formula (2)'s targets.
    """
    return keras.losses.CategoricalCrossentropy(label_smoothing=keras_equivalent_smoothing(eps, scheme))


def _probabilities(p: np.ndarray | Sequence, clip: bool) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"predicted probabilities must have shape [n, N], got {p.shape}")
    if (p < 0).any():
        raise ValueError("predicted probabilities must be >= 0 (pass softmax outputs, not logits)")
    p = p / p.sum(axis=1, keepdims=True)
    if clip:
        e = keras.config.epsilon()
        p = np.clip(p, e, 1.0 - e)
    return p


def cross_entropy(y_true: np.ndarray | Sequence, p: np.ndarray | Sequence, clip: bool = True) -> np.ndarray:
    """Return the per-sample cross-entropy ``-sum_k t_k * log(p_k)`` (natural log).

    Args:
        y_true: target rows ``[n, N]`` (one-hot or smoothed) or int class indices ``[n]``.
        p: predicted probabilities ``[n, N]`` (softmax outputs).
        clip: as Keras does, renormalise each row of ``p`` and clip it to
            ``[epsilon, 1 - epsilon]`` (``keras.config.epsilon()``, 1e-7) so ``log(0)`` never occurs.

    Returns:
        float64 array ``[n]``. Its mean is what ``keras.losses.CategoricalCrossentropy`` reports.
    """
    p = _probabilities(p, clip)
    t = _one_hot(y_true, p.shape[1])
    if t.shape != p.shape:
        raise ValueError(f"targets {t.shape} and probabilities {p.shape} differ in shape")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(t > 0, -t * np.log(p), 0.0)
    return terms.sum(axis=1)


def paper_formula_3(y: np.ndarray | Sequence, p: np.ndarray | Sequence, eps: float) -> np.ndarray:
    """Return the paper's formula (3) per sample: ``-log((1-eps) p_j) - sum_{k != j} log(eps/(N-1) p_k)``.

    ``j`` is the true class. Unlike a cross-entropy, each target sits *inside* the log with weight 1,
    so the value equals ``-sum_k log p_k`` plus a constant: it is minimised by the uniform prediction
    ``p = 1/N`` whatever the label, and grows without bound as a confident correct prediction sends
    the other ``p_k`` to 0. No clipping is applied (``p_k = 0`` gives ``inf``).

    Args:
        y: int class indices ``[n]`` or one-hot rows ``[n, N]``.
        p: predicted probabilities ``[n, N]``.
        eps: the smoothing amount of formula (2).
    """
    p = _probabilities(p, clip=False)
    onehot = _one_hot(y, p.shape[1])
    n_classes = p.shape[1]
    scale = onehot * (1.0 - eps) + (1.0 - onehot) * eps / (n_classes - 1)
    with np.errstate(divide="ignore"):
        return -np.log(scale * p).sum(axis=1)


# ----------------------------------------------------------------------------- class weights


def class_counts(
    manifest_or_counts: pd.DataFrame | Mapping | Sequence[int], split: str | None = "train"
) -> np.ndarray:
    """Return the number of images per class, as an int array in the order of ``CLASSES``.

    Args:
        manifest_or_counts: the manifest (a DataFrame with a ``label`` column holding class names,
            and ``split`` if ``split`` is given), a mapping ``{class name or index: count}``, or a
            sequence of counts in ``CLASSES`` order.
        split: with a manifest, count only the rows of this split (``None``: all rows).
    """
    n = len(CLASSES)
    if isinstance(manifest_or_counts, pd.DataFrame):
        df = manifest_or_counts
        if "label" not in df.columns:
            raise ValueError(f"the manifest needs a 'label' column; it has {list(df.columns)}")
        if split is not None:
            if "split" not in df.columns:
                raise ValueError("the manifest has no 'split' column; pass split=None to count all rows")
            df = df[df["split"] == split]
        unknown = sorted(set(df["label"]) - set(CLASSES))
        if unknown:
            raise ValueError(f"manifest labels {unknown} are not among {CLASSES}")
        counts = df["label"].value_counts().reindex(list(CLASSES), fill_value=0).to_numpy()
    elif isinstance(manifest_or_counts, Mapping):
        counts = np.zeros(n, dtype=int)
        for key, value in manifest_or_counts.items():
            idx = CLASSES.index(key) if isinstance(key, str) else int(key)
            counts[idx] = int(value)
    else:
        counts = np.asarray(manifest_or_counts, dtype=int)
        if counts.shape != (n,):
            raise ValueError(f"counts must list {n} numbers in the order {CLASSES}, got {counts.tolist()}")
    if (counts <= 0).any():
        per_class = dict(zip(CLASSES, counts.tolist(), strict=True))
        raise ValueError(f"every class needs at least one image to weight it; counts {per_class}")
    return counts.astype(int)


def class_weights(
    manifest_or_counts: pd.DataFrame | Mapping | Sequence[int],
    scheme: WeightScheme = "paper",
    beta: float = 0.999,
    split: str | None = "train",
) -> dict[int, float]:
    """Return class weights keyed by class index, as ``model.fit(class_weight=...)`` wants.

    Args:
        manifest_or_counts: see :func:`class_counts` (the manifest, or counts per class).
        scheme: ``"paper"``: the script's fixed ``{0: 10, 1: 3, 2: 1}`` (counts unused);
            ``"balanced"``: ``n / (N * n_c)``, scikit-learn's ``compute_class_weight("balanced")``;
            ``"effective"``: Cui et al. (2019), ``(1 - beta) / (1 - beta ** n_c)``, scaled so the
            weights sum to N; ``"none"``: all 1.
        beta: the effective-number hyperparameter (0 gives equal weights, towards 1 inverse frequency).
        split: the manifest split whose images are counted.
    """
    n = len(CLASSES)
    if scheme == "paper":
        return dict(PAPER_CLASS_WEIGHTS)
    if scheme == "none":
        return dict.fromkeys(range(n), 1.0)
    counts = class_counts(manifest_or_counts, split=split)
    if scheme == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        labels = np.repeat(np.arange(n), counts)
        w = compute_class_weight("balanced", classes=np.arange(n), y=labels)
    elif scheme == "effective":
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must lie in [0, 1), got {beta}")
        w = (1.0 - beta) / (1.0 - np.power(beta, counts.astype(np.float64)))
        w = w / w.sum() * n
    else:
        raise ValueError(f"scheme must be 'paper', 'balanced', 'effective' or 'none', got {scheme!r}")
    return {i: float(v) for i, v in enumerate(w)}


def loss_share(weights: Mapping[int, float], manifest_or_counts: pd.DataFrame | Mapping | Sequence[int],
               split: str | None = "train") -> dict[int, float]:
    """Return each class's share of the summed sample weights, ``w_c n_c / sum_k w_k n_k``.

    With equal per-sample losses this is the fraction of the training loss (and of its gradient)
    that comes from class ``c``; without weights it is just the class frequency.
    """
    counts = class_counts(manifest_or_counts, split=split)
    mass = np.array([weights[i] * counts[i] for i in range(len(CLASSES))], dtype=np.float64)
    return {i: float(v) for i, v in enumerate(mass / mass.sum())}
