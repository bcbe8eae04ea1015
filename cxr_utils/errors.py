"""Error analysis: what the images a model calls wrongly have in common, measured with intervals.

:func:`image_properties` measures, for each image file, what a radiographer would notice before any
disease: its size and shape before resizing, how bright and how contrasted it is, how much of its
border is black (collimation, a scanned film's frame), and how much of its corners is near white
(burnt-in text and markers). :func:`compare_groups` sets a group of images (say, the Normals a model
calls Pneumonia) against another (the Normals it calls Normal): each property's mean in both, their
difference, and a 95 % bootstrap interval of that difference over patient groups. An interval that
excludes 0 says the groups differ in that property; it does not say that the property is why the model
errs (both may follow from a third thing, such as which hospital or year an image came from).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import preprocess
from cxr_utils.images import ImageError, image_info, is_dicom, read_image
from cxr_utils.metrics import bootstrap_weights, percentiles, resampling_groups

PROPERTIES: dict[str, str] = {
    "width": "width of the file in pixels, before any resizing",
    "height": "height of the file in pixels",
    "aspect": "width / height",
    "brightness": "mean grey level, 0 (black) to 1 (white)",
    "contrast": "standard deviation of the grey levels",
    "black_border": "share of the outer 8 % frame that is near black (grey level below 0.06)",
    "white_corners": "share of the four corner squares (12 % of the side) that is near white (above 0.90)",
}
"""The properties :func:`image_properties` measures, and what each is."""

SIZE = 256
"""Side (pixels) the grey levels are measured at; the size and aspect come from the file itself."""


def properties_of(path: str | os.PathLike[str]) -> dict[str, float]:
    """The :data:`PROPERTIES` of one image file.

    Raises:
        cxr_utils.images.ImageError: the file cannot be read.
    """
    info = None if is_dicom(path) else image_info(path)
    grey = preprocess.scale(read_image(path, channels=1, size=(SIZE, SIZE))).astype(np.float64)  # 0..1
    frame = max(1, round(0.08 * SIZE))
    border = np.ones_like(grey, dtype=bool)
    border[frame:-frame, frame:-frame] = False
    corner = max(1, round(0.12 * SIZE))
    corners = np.concatenate([grey[:corner, :corner].ravel(), grey[:corner, -corner:].ravel(),
                              grey[-corner:, :corner].ravel(), grey[-corner:, -corner:].ravel()])
    width, height = (info.width, info.height) if info else (SIZE, SIZE)
    return {"width": float(width), "height": float(height), "aspect": width / height,
            "brightness": float(grey.mean()), "contrast": float(grey.std()),
            "black_border": float((grey[border] < 0.06).mean()), "white_corners": float((corners > 0.90).mean())}


def image_properties(paths: Sequence[str], root: str | os.PathLike[str]) -> pd.DataFrame:
    """The :data:`PROPERTIES` of each image, indexed by its path (relative to ``root``); unreadable files are NaN."""
    rows = {}
    for rel in paths:
        try:
            rows[rel] = properties_of(Path(root) / rel)
        except ImageError:
            rows[rel] = dict.fromkeys(PROPERTIES, np.nan)
    return pd.DataFrame.from_dict(rows, orient="index")[list(PROPERTIES)]


def compare_groups(props: pd.DataFrame, in_group: np.ndarray, reference: np.ndarray, units: pd.DataFrame,
                   n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Each property's mean in ``in_group`` and in ``reference``, the difference, and its bootstrap interval.

    Args:
        props: :func:`image_properties` of the images (rows aligned with the masks).
        in_group, reference: boolean masks over the rows (disjoint).
        units: the rows' ``path`` and ``split_group`` (a predictions table): the patient groups the bootstrap
            resamples, so a patient's several images move together.
        n_boot, seed, confidence: the bootstrap.

    Returns:
        One row per property: ``group mean``, ``reference mean``, ``difference`` (group - reference),
        ``ci_low``, ``ci_high``, and ``n group``, ``n reference`` (images).
    """
    in_group, reference = np.asarray(in_group, bool), np.asarray(reference, bool)
    codes, _ = resampling_groups(units)
    w = bootstrap_weights(codes, n_boot, seed)
    rows = {}
    for name in props.columns:
        x = props[name].to_numpy(np.float64)
        ok = np.isfinite(x)
        a, b = in_group & ok, reference & ok
        xa, xb = np.where(a, x, 0.0), np.where(b, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = (w @ xa) / (w @ a) - (w @ xb) / (w @ b)
        lo, hi = percentiles(diff[:, None], confidence)
        rows[name] = {"group mean": x[a].mean(), "reference mean": x[b].mean(),
                      "difference": x[a].mean() - x[b].mean(), "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                      "n group": int(a.sum()), "n reference": int(b.sum())}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("property")
