#!/usr/bin/env python3
"""Where does a batch-norm model's test gap live? Re-estimate its running statistics and evaluate again.

    python tools/adapt_bn.py runs/improved_std128       # a complete run folder with best.keras

Evaluates the run's ``best.keras`` on the test split three times: as trained; with every batch-norm
layer's running mean and variance re-estimated on 1,500 clean (unaugmented) training images; and
re-estimated on the test images themselves, **without their labels** (AdaBN, Li et al. 2016). The
third is a transductive adaptation to the test set's inputs, not a result to report as the model's:
it says how much of the gap sits in the running statistics alone. Prints accuracy and recall per class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cxr_utils import CLASSES, data, models, train
from cxr_utils import evaluate as ev


def evaluate(model, size: int, channels: int) -> dict[str, float]:
    """Accuracy and recall per class of ``model`` on the test split, from ``train.predict_split``."""
    df = train.predict_split(model, "test", image_size=size, channels=channels)
    cm = ev.confusion_matrix(ev.true_labels(df), ev.probabilities(df).argmax(axis=1))
    return {"accuracy": float(np.trace(cm) / cm.sum()),
            **{f"recall {c}": float(cm[i, i] / cm[i].sum()) for i, c in enumerate(CLASSES)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a complete run folder (with best.keras)")
    args = parser.parse_args()
    model, metrics, _ = train.load_run(args.run)
    size, channels = metrics["image_size"], model.input_shape[-1]
    x_test, _ = data.load_split("test", size, channels)  # images only: AdaBN never sees a label
    x_train, _ = data.load_split("train", size, channels, subset=1500, seed=0)
    x_test, x_train = x_test.astype(np.float32) / 255.0, x_train.astype(np.float32) / 255.0
    rows = {"as trained": model,
            "running statistics from 1,500 training images": models.recalibrate_batchnorm(model, x_train),
            "running statistics from the test images (no labels)": models.recalibrate_batchnorm(model, x_test)}
    print(f"{args.run}: test split, {len(x_test)} images")
    for name, m in rows.items():
        scores = evaluate(m, size, channels)
        print(f"  {name:<52} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
