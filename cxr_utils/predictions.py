"""The predictions table: one row per image, its label and the model's three probabilities.

Every run writes ``predictions_val.csv`` and ``predictions_test.csv`` in this format, the external
evaluation writes ``predictions_external.csv``, and every figure of lessons 06-08 is computed from
such a table, so the numbers can be recomputed without weights:

==============  ===========================================================================
``path``        the image, relative to the data folder (or to ``CXR_EXTERNAL_DIR``)
``label``       its class, one of :data:`cxr_utils.CLASSES`
``split_group`` the patient group the curated split kept together (empty when unknown)
``p_<class>``   the predicted probability of each class, in the order of :data:`cxr_utils.CLASSES`
==============  ===========================================================================
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, atomic, label_indices

PROB_COLUMNS: tuple[str, ...] = tuple(f"p_{c}" for c in CLASSES)
"""The probability columns, in the order of :data:`cxr_utils.CLASSES`."""

PREDICTION_COLUMNS: tuple[str, ...] = ("path", "label", "split_group", *PROB_COLUMNS)
"""Every column of a predictions table, in the order a run writes them."""

FLOAT_FORMAT = "%.6g"
"""How probabilities are written: six significant digits, as every committed predictions file."""


class PredictionsError(ValueError):
    """A predictions table is missing, lacks a column or holds values outside what a run writes."""


def validate_predictions(df: pd.DataFrame, where: str = "<DataFrame>") -> pd.DataFrame:
    """Check a predictions table and return a copy with a clean ``split_group`` (missing -> NA).

    Raises:
        PredictionsError: naming ``where`` and the problem: no rows, a missing column, an empty or
            repeated path, a label that is empty or not one of :data:`cxr_utils.CLASSES`, or a
            probability that is missing, not a number, or outside [0, 1].
    """
    fix = "write it with cxr_utils.predictions (columns " + ", ".join(PREDICTION_COLUMNS) + ")"
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise PredictionsError(f"Predictions '{where}' lack the column(s) {missing}; {fix}.")
    if len(df) == 0:
        raise PredictionsError(f"Predictions '{where}' have no rows; {fix}.")
    path = df["path"].astype("string").str.strip()
    if (path.isna() | (path == "")).any():
        row = int(np.flatnonzero((path.isna() | (path == "")).to_numpy())[0])
        raise PredictionsError(f"Predictions '{where}' have an empty path (row {row + 1}); {fix}.")
    if path.duplicated().any():
        raise PredictionsError(f"Predictions '{where}' list '{path[path.duplicated()].iloc[0]}' more than once; "
                               "each image must have one row.")
    label = df["label"].astype("string").str.strip()
    if (label.isna() | (label == "")).any():
        row = int(np.flatnonzero((label.isna() | (label == "")).to_numpy())[0])
        raise PredictionsError(f"Predictions '{where}' have an empty label (row {row + 1}, '{path.iloc[row]}'); {fix}.")
    bad = sorted(set(label) - set(CLASSES))
    if bad:
        raise PredictionsError(f"Predictions '{where}' have label(s) {bad} outside {list(CLASSES)}; {fix}.")
    try:
        p = df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise PredictionsError(f"Predictions '{where}' have probabilities that are not numbers; {fix}.") from None
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        row = int(np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)).all(axis=1))[0])
        raise PredictionsError(f"Predictions '{where}' have probabilities that are not numbers in [0, 1] "
                               f"(row {row + 1}, '{path.iloc[row]}'); {fix}.")
    out = df.copy()
    group = out["split_group"].astype("string").str.strip()
    out["split_group"] = group.where(group.notna() & (group != ""), other=pd.NA)
    return out


def load_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and check a predictions file (see :func:`validate_predictions`).

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
    return label_indices(df["label"])


def probabilities(df: pd.DataFrame) -> np.ndarray:
    """Return the predicted probabilities ``[N, 3]`` (float64) in class order."""
    return df[list(PROB_COLUMNS)].to_numpy(dtype=np.float64)


def predicted(df: pd.DataFrame) -> np.ndarray:
    """Return the class each image is called: the index of its highest probability."""
    return probabilities(df).argmax(axis=1)


def predictions_frame(files: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Return ``files`` (``path``, ``label``, ``split_group``) with the probability columns of ``probs`` added."""
    out = files[["path", "label", "split_group"]].copy()
    probs = np.asarray(probs)
    for j, col in enumerate(PROB_COLUMNS):
        out[col] = probs[:, j].astype(np.float64)
    return out.reset_index(drop=True)


def write_predictions(path: str | os.PathLike[str], df: pd.DataFrame) -> Path:
    """Write a predictions table atomically, probabilities to :data:`FLOAT_FORMAT`; return ``path``."""
    return atomic.write_csv(path, df[list(PREDICTION_COLUMNS)], float_format=FLOAT_FORMAT)
