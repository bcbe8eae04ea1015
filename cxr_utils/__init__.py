"""Helpers shared by the lessons of the COVID-19 chest X-ray course.

One module per concern, so a reader can guess the file from the question:

Data
    ``paths``        where data, caches and runs live (``CXR_DATA_DIR``, ``CXR_RUNS_DIR``)
    ``atomic``       writing files that are never half-written
    ``images``       decoding any image file we meet (PNG, JPEG, DICOM ...) into a clean 8-bit array
    ``sources``      the four public sources: what each is, where it lives upstream and on disk
    ``fetch``        downloading the sources (or copying them from a mirror) and verifying them
    ``metadata``     reading each source's metadata into one table
    ``curation``     which images are kept, duplicates, and the patient-level split
    ``data``         the manifest, the decoded-image cache, splits and ``tf.data`` pipelines
    ``preprocess``   from an image file to model input: the one preprocessing
    ``augment``      training-time augmentation policies

Models and training
    ``models``       the paper's network, the course's efficient network, their anatomy
    ``losses``       cross-entropy, label smoothing, class weights
    ``schedules``    learning-rate schedules and the range test
    ``precision``    mixed precision: what the hardware offers and what pays
    ``devices``      one device, several, or several machines (``tf.distribute``); who writes the run
    ``runs``         what a run folder is: complete or not, its config, reloading, exporting
    ``train``        the named recipes and training one into a run folder

Evaluation
    ``predictions``  the predictions table every evaluation starts from
    ``metrics``      accuracy, per-class metrics, AUC, calibration, and their intervals
    ``evaluate``     every figure of one run's test predictions, in one report
    ``compare``      the paper's figures next to ours; two runs on the same images
    ``decisions``    from probabilities to calls: thresholds, costs, priors
    ``external``     a trained model on images from another collection
    ``saliency``     where a network looks: Grad-CAM, its randomisation check, the lung fields
    ``errors``       what the wrongly called images have in common
    ``shortcuts``    what a model can learn besides the disease: hidden lungs, the source, age
    ``predict``      the ``cxr-predict`` command: a trained run on one's own images
    ``plots``        figures used by the lessons

Around the lessons
    ``paper``        the numbers Zhong (2020) reports
    ``notebook``     what every lesson does first
    ``lessons``      the lessons' headers, Colab badges and execution
    ``colab``        a lesson's first cell on Colab: version warnings, Kaggle token, the data
    ``cli``          the ``cxr-data`` command
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__version__ = "0.1.0"

CLASSES: tuple[str, ...] = ("COVID-19", "Normal", "Pneumonia")
"""The three classes, in the order of the paper's script (COVID-19 -> 0, Normal -> 1, Pneumonia -> 2)."""


def label_indices(labels: Iterable[str]) -> np.ndarray:
    """Map class names to their indices in :data:`CLASSES` (COVID-19 0, Normal 1, Pneumonia 2).

    Raises:
        ValueError: a name is not one of :data:`CLASSES` (the message names it).
    """
    index = {name: i for i, name in enumerate(CLASSES)}
    try:
        return np.array([index[str(v)] for v in labels], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"label {exc.args[0]!r} is not one of {list(CLASSES)}") from None
