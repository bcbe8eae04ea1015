"""A trained model on images from another collection: the external set of ``CXR_EXTERNAL_DIR``.

The COVID-19 Radiography Database images of ``../shared/cxr-external`` (300 COVID-19, 300 adult
Normal) come from other hospitals than the course's sources. :func:`external_images` lists them,
:func:`predict_external` runs a trained run folder on them with the run's own preprocessing and
writes ``predictions_external.csv`` into the run folder, and :func:`external_summary` puts the
figures that matter (COVID-19 recall; how many Normal chests are called COVID-19) next to the same
figures on the in-source test split, each with its interval.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, preprocess, runs
from cxr_utils.metrics import (
    K,
    bootstrap_weights,
    confusion_matrix,
    percentiles,
    resampling_groups,
    safe_ratio,
    wilson_interval,
)
from cxr_utils.predictions import (
    load_predictions,
    predicted,
    predictions_frame,
    true_labels,
    validate_predictions,
    write_predictions,
)

PREDICTIONS_FILE = "predictions_external.csv"
"""Where :func:`predict_external` keeps a run's predictions of the external set, inside the run folder."""

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
        y, pred = true_labels(df), predicted(df)
        codes, _ = resampling_groups(df)
        w = bootstrap_weights(codes, n_boot, seed)
        for figure, cls, hit in (("COVID-19 recall", 0, pred == 0), ("Normal specificity for COVID-19", 1, pred != 0),
                                 ("Normal recall", 1, pred == 1)):
            mask = (y == cls).astype(float)
            k, n = int((hit & (y == cls)).sum()), int(mask.sum())
            reps = safe_ratio((w * mask) @ hit.astype(float), w @ mask)
            lo, hi = percentiles(reps[:, None], confidence)
            wl, wh = wilson_interval(k, n, confidence)
            rows.append({"figure": figure, "set": set_name, "estimate": k / n if n else np.nan,
                         "wilson_low": wl, "wilson_high": wh, "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                         "k": k, "n": n})
    return pd.DataFrame(rows).set_index(["figure", "set"])


def called_as(df: pd.DataFrame) -> pd.DataFrame:
    """Return, per actual class, the share of images called each class (rows actual, columns called)."""
    df = validate_predictions(df)
    cm = confusion_matrix(true_labels(df), predicted(df), K)
    t = pd.DataFrame(cm, index=pd.Index(CLASSES, name="actual"), columns=pd.Index(CLASSES, name="called"))
    return t.loc[t.sum(axis=1) > 0]


def predict_external(run_dir: str | os.PathLike[str], root: str | os.PathLike[str], *, limit: int | None = None,
                     seed: int = 0, batch_size: int = 64) -> pd.DataFrame:
    """Predict the external images with a complete run, as its test split was predicted; keep the result.

    Each image becomes model input through :func:`cxr_utils.preprocess.model_input` at the run's own
    ``image_size`` and ``channels``. The table is written atomically to ``<run>/predictions_external.csv``
    (exported to ``results/`` with the run) and read back from there next time, unless the image list
    changed.

    Args:
        run_dir: a complete run folder (:func:`cxr_utils.runs.require_complete`).
        root: ``CXR_EXTERNAL_DIR``.
        limit: at most this many images, stratified by class with ``seed`` (quick runs; then nothing is kept).
        seed: seed of the ``limit`` choice.
        batch_size: images per prediction batch.

    Returns:
        A predictions table (:mod:`cxr_utils.predictions`), paths relative to ``root``.
    """
    from cxr_utils.data import stratified_subset

    run_dir = runs.require_complete(run_dir)
    files = external_images(root)
    if limit is not None:
        files = files.iloc[stratified_subset(true_labels(files), int(limit), seed)].reset_index(drop=True)
    kept = Path(run_dir) / PREDICTIONS_FILE
    if limit is None and kept.is_file():
        old = load_predictions(kept)
        if list(old["path"]) == list(files["path"]):
            return old
    size, channels = runs.preprocessing(run_dir)
    model = runs.load_model(run_dir)
    x = preprocess.model_input([Path(root) / p for p in files["path"]], size, channels)
    out = predictions_frame(files, model.predict(x, batch_size=batch_size, verbose=0))
    if limit is None:
        write_predictions(kept, out)
        out = load_predictions(kept)  # as written (six significant digits), so every later reading agrees
    return out


# ---------------------------------------------------------------------------------------------
# Lesson 08's de-confounding experiment: part of the external adult Normals joins training

SPLIT_SALT = "cxr-course: external Normals for the de-confounding experiment, rule fixed 2026-11-29 before any run"
"""The salt of the one split of the external Normals (:func:`split_normals`); changing it would be another split."""

NORMALS_FOR_TRAINING = 150
"""How many of the external set's 300 adult Normals join training; the rest are kept for testing."""


def split_normals(root: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split the external Normals once, by a rule fixed before any run: ``(for training, kept for testing)``.

    Each Normal image's key is the SHA-256 of :data:`SPLIT_SALT` and its file name; the
    :data:`NORMALS_FOR_TRAINING` images with the smallest keys join training, the others are kept. No
    image's content or prediction enters the rule, so it cannot favour any model.
    """
    import hashlib

    ext = external_images(root)
    normals = ext[ext["label"] == "Normal"].copy()
    normals["key"] = [hashlib.sha256(f"{SPLIT_SALT}|{Path(p).name}".encode()).hexdigest() for p in normals["path"]]
    normals = normals.sort_values("key")
    chosen = normals.iloc[:NORMALS_FOR_TRAINING].drop(columns="key").sort_values("path")
    kept = normals.iloc[NORMALS_FOR_TRAINING:].drop(columns="key").sort_values("path")
    return chosen.reset_index(drop=True), kept.reset_index(drop=True)


def kept_for_testing(root: str | os.PathLike[str]) -> pd.DataFrame:
    """The external images no model trained on: every COVID-19 image and the Normals :func:`split_normals` kept."""
    ext = external_images(root)
    _, kept = split_normals(root)
    return pd.concat([ext[ext["label"] == "COVID-19"], kept], ignore_index=True)


KEPT_CALLS: tuple[tuple[str, str, str], ...] = (
    ("kept adult Normals called COVID-19", "Normal", "COVID-19"),
    ("kept adult Normals called Normal", "Normal", "Normal"),
    ("external COVID-19 called COVID-19", "COVID-19", "COVID-19"),
)
"""The figures of the de-confounding experiment: ``(figure, actual class, called class)``."""


def kept_calls(frames: dict[str, pd.DataFrame], root: str | os.PathLike[str]) -> pd.DataFrame:
    """Count how each run calls the external images no model trained on (:func:`kept_for_testing`).

    Args:
        frames: run name -> its predictions of the external set (``predictions_external.csv``, or
            :func:`predict_external`'s table); images outside the kept ones are left out.
        root: the external set's folder (``CXR_EXTERNAL_DIR``), to know which Normals were kept.

    Returns:
        One row per figure of :data:`KEPT_CALLS` and run (index ``figure``, ``run``): ``k`` of ``n`` images,
        their ``share`` and its 95 % Wilson interval (``wilson_low``, ``wilson_high``).
    """
    kept = set(kept_for_testing(root)["path"])
    calls = {name: (predicted(df[df["path"].isin(kept)]), true_labels(df[df["path"].isin(kept)]))
             for name, df in frames.items()}
    rows = []
    for figure, cls, as_ in KEPT_CALLS:
        for name, (called, actual) in calls.items():
            is_cls = actual == CLASSES.index(cls)
            k, n = int((is_cls & (called == CLASSES.index(as_))).sum()), int(is_cls.sum())
            lo, hi = wilson_interval(k, n)
            rows.append({"figure": figure, "run": name, "k": k, "n": n, "share": k / n if n else np.nan,
                         "wilson_low": lo, "wilson_high": hi})
    return pd.DataFrame(rows).set_index(["figure", "run"])


def extra_training_images(name: str) -> tuple[list[Path], np.ndarray]:
    """The files and class indices a recipe's ``extra_train`` adds to training (see :class:`cxr_utils.train.Recipe`).

    Raises:
        ValueError: an unknown name, or ``CXR_EXTERNAL_DIR`` not set (the external set is needed).
    """
    from cxr_utils import paths

    if name != "external_normals":
        raise ValueError(f"unknown extra_train {name!r}; the one there is: 'external_normals'")
    root = paths.external_dir()
    if root is None:
        raise ValueError("this recipe trains on part of the external set: set CXR_EXTERNAL_DIR to its folder "
                         "(../shared/cxr-external in the course's checkout)")
    chosen, _ = split_normals(root)
    return [root / p for p in chosen["path"]], true_labels(chosen)
