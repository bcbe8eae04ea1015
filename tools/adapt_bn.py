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


def evaluate(model, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and recall per class of ``model`` on images ``x`` (float32 [0, 1]) with integer labels ``y``."""
    pred = model.predict(x, batch_size=128, verbose=0).argmax(axis=1)
    return {"accuracy": float((pred == y).mean()),
            **{f"recall {c}": float((pred[y == i] == i).mean()) for i, c in enumerate(CLASSES)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a complete run folder (with best.keras)")
    args = parser.parse_args()
    model, metrics, _ = train.load_run(args.run)
    size, channels = metrics["image_size"], model.input_shape[-1]
    x_test, y_test = data.load_split("test", size, channels)
    x_train, _ = data.load_split("train", size, channels, subset=1500, seed=0)
    x_test, x_train = x_test.astype(np.float32) / 255.0, x_train.astype(np.float32) / 255.0
    rows = {"as trained": model,
            "running statistics from 1,500 training images": models.recalibrate_batchnorm(model, x_train),
            "running statistics from the test images (no labels)": models.recalibrate_batchnorm(model, x_test)}
    print(f"{args.run}: test split, {len(y_test)} images")
    for name, m in rows.items():
        scores = evaluate(m, x_test, y_test)
        print(f"  {name:<52} " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
