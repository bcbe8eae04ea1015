"""From probabilities to calls: thresholds, costs and priors (lesson 07's last sections).

A model gives probabilities; a decision rule turns them into calls. "Call the most probable class" is one
rule among many, and the right one depends on what each mistake costs and on how common each class is
where the model is used:

- :func:`threshold_table` follows one class (COVID-19) over thresholds: call it whenever its probability
  reaches the threshold, and see its sensitivity and the other classes' specificity move, each with an
  interval (bootstrap over patient groups).
- :func:`bayes_calls` calls, for each image, the class of least expected cost under a cost matrix
  (``cost[actual, called]``); with 0 on the diagonal and 1 elsewhere it is the most probable class.
- :func:`adjust_priors` re-weighs probabilities learned under one set of class shares (the priors) for
  another (Bayes' rule, Saerens et al. 2002): a model trained where COVID-19 is 7 % of images, used where
  it is 1 %, should say so. The weighted loss of training moves the priors too (lesson 04): class weights
  ``w_c`` act like training priors proportional to ``w_c * n_c``.
- :func:`em_priors` estimates a new site's class shares from its **unlabelled** images (the EM algorithm
  of Saerens et al. 2002) and the adjusted probabilities that go with them. It assumes label shift only:
  the images of each class look as they did in training, only their shares changed. When the images
  themselves change (another hospital's scanners, adults instead of children), the estimate is wrong, and
  nothing in the unlabelled images says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxr_utils import CLASSES
from cxr_utils.metrics import bootstrap_weights, percentiles, resampling_groups, safe_ratio


def threshold_table(df: pd.DataFrame, thresholds: Sequence[float], cls: str = "COVID-19", n_boot: int = 2000,
                    seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Sensitivity for ``cls`` and specificity against it when ``cls`` is called at ``p(cls) >= threshold``.

    Args:
        df: a predictions table (:mod:`cxr_utils.predictions`), with ``split_group`` for the bootstrap.
        thresholds: the thresholds to try.
        cls: the class followed.
        n_boot, seed, confidence: the bootstrap over patient groups.

    Returns:
        One row per threshold: ``sensitivity`` (images of ``cls`` called ``cls``) and ``specificity``
        (other images not called ``cls``), each with ``_low``/``_high``, and the counts called.
    """
    from cxr_utils.predictions import true_labels

    k = CLASSES.index(cls)
    y = true_labels(df) == k
    p = df[f"p_{cls}"].to_numpy(np.float64)
    codes, _ = resampling_groups(df)
    w = bootstrap_weights(codes, n_boot, seed)
    rows = []
    for t in thresholds:
        hit = p >= t
        row = {"threshold": float(t), "called": int(hit.sum())}
        for name, mask, good in (("sensitivity", y, hit), ("specificity", ~y, ~hit)):
            row[name] = float(good[mask].mean()) if mask.any() else np.nan
            reps = safe_ratio((w * mask) @ good.astype(float), w @ mask.astype(float))
            lo, hi = percentiles(reps[:, None], confidence)
            row[f"{name}_low"], row[f"{name}_high"] = float(lo[0]), float(hi[0])
        rows.append(row)
    return pd.DataFrame(rows).set_index("threshold")


def bayes_calls(probs: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The class of least expected cost for each image: ``argmin_j sum_i p_i cost[i, j]`` (``cost[actual, called]``)."""
    return np.argmin(np.asarray(probs, np.float64) @ np.asarray(cost, np.float64), axis=1)


def adjust_priors(probs: np.ndarray, trained: Sequence[float], new: Sequence[float]) -> np.ndarray:
    """Probabilities learned under class shares ``trained`` re-weighed for shares ``new`` (each row sums to 1)."""
    ratio = np.asarray(new, np.float64) / np.asarray(trained, np.float64)
    out = np.asarray(probs, np.float64) * ratio
    return out / out.sum(axis=1, keepdims=True)


def em_priors(probs: np.ndarray, trained: Sequence[float], iterations: int = 200,
              tolerance: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Estimate the class shares of a set of unlabelled images (Saerens et al. 2002), and adjust to them.

    Alternates: adjust the probabilities to the current shares (:func:`adjust_priors`), then take the mean
    adjusted probability of each class as the new shares, until they stop moving.

    Returns:
        ``(shares, adjusted probabilities)``.
    """
    trained = np.asarray(trained, np.float64)
    shares = trained.copy()
    for _ in range(iterations):
        adjusted = adjust_priors(probs, trained, shares)
        new = adjusted.mean(axis=0)
        if np.abs(new - shares).max() < tolerance:
            shares = new
            break
        shares = new
    return shares, adjust_priors(probs, trained, shares)


def training_priors(counts: Sequence[int], weights: dict[int, float] | None = None) -> np.ndarray:
    """The class shares a model trained on ``counts`` images per class (and class ``weights``) behaves as if it saw.

    A weighted cross-entropy counts each image of class ``c`` ``w_c`` times, so the model's probabilities
    estimate the posterior under shares proportional to ``w_c * n_c``.
    """
    counts = np.asarray(counts, np.float64)
    w = np.array([1.0 if weights is None else weights.get(k, 1.0) for k in range(len(counts))])
    return counts * w / (counts * w).sum()
