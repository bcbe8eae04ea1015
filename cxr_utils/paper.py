"""The numbers Zhong (2020) reports, in one place, so lessons compare against the same figures.

Sources: the paper's Tables 1 and 3-5 (``shared/paper/zhong2020-covid19-cxr-dcnn.md``) and the
author's training script as summarised in ``shared/paper/NOTES.md``.
"""

from __future__ import annotations

import pandas as pd

from cxr_utils import CLASSES

SPLIT_COUNTS = pd.DataFrame(
    {"train": [398, 1341, 3875], "test": [100, 242, 398]}, index=pd.Index(CLASSES, name="label")
)
"""Table 1: images per class in the paper's train and test splits (it had no validation split)."""

RESULTS = pd.DataFrame(
    {
        "loss": [0.986, 0.5632, 0.4304],
        "accuracy": [0.9325, 0.873, 0.98],
        "precision": [0.9463, 0.8967, 0.9798],
        "recall": [0.9133, 0.8446, 0.97],
    },
    index=pd.Index(["train", "test", "COVID-19 (test)"], name="split"),
)
"""Tables 3-4: loss, accuracy and Keras' micro-averaged precision/recall at threshold 0.5."""

CONFUSION = pd.DataFrame(
    [[98, 0, 2], [9, 197, 36], [5, 42, 351]],
    index=pd.Index(CLASSES, name="actual"),
    columns=pd.Index(CLASSES, name="predicted"),
)
"""Table 5: the test confusion matrix (rows actual, columns predicted)."""

TRUE_CLASS_PROBABILITY = pd.DataFrame(
    {"mean": [0.8445, 0.6763, 0.7761], "ci_low": [0.8185, 0.6462, 0.7541], "ci_high": [0.8705, 0.7063, 0.7981]},
    index=pd.Index(CLASSES, name="label"),
)
"""Table 4: mean predicted probability of the true class on test, with the paper's 95 % interval."""

LABEL_SMOOTHING = 0.12
"""The script's ``CategoricalCrossentropy(label_smoothing=0.12)`` (Keras' scheme: ``eps / N`` on every class)."""

SECONDS_PER_EPOCH = 267
"""Training time per epoch (88 steps of 32) on a GTX 1050 2 GB with TensorFlow 2.2."""
