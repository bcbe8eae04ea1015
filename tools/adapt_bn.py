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

from cxr_utils import data, metrics, models, preprocess, runs, train


def evaluate(model, size: int, channels: int) -> dict[str, float]:
    """Accuracy and recall per class of ``model`` on the test split (:func:`cxr_utils.metrics.summary`)."""
    s = metrics.summary(train.predict_split(model, "test", image_size=size, channels=channels))
    return {"accuracy": s["accuracy"], **{f"recall {c}": r for c, r in s["recall"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a complete run folder (with best.keras)")
    args = parser.parse_args()
    model, _, _ = runs.load_run(args.run)
    size, channels = runs.preprocessing(args.run)
    x_test, _ = data.load_split("test", size, channels)  # images only: AdaBN never sees a label
    x_train, _ = data.load_split("train", size, channels, subset=1500, seed=0)
    x_test, x_train = preprocess.scale(x_test), preprocess.scale(x_train)
    rows = {"as trained": model,
            "running statistics from 1,500 training images": models.recalibrate_batchnorm(model, x_train),
            "running statistics from the test images (no labels)": models.recalibrate_batchnorm(model, x_test)}
    print(f"{args.run}: test split, {len(x_test)} images")
    for name, m in rows.items():
        scores = evaluate(m, size, channels)
        print(f"  {name:<52} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
