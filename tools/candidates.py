#!/usr/bin/env python3
"""Summarise the first improved recipe and the candidates tried after it into results/candidates/summary.csv.

    python tools/candidates.py            # rewrite results/candidates/summary.csv and print it

Reads only committed files: ``results/improved_v1/`` and ``results/candidates/<name>/`` (metrics.json,
predictions_val.csv, predictions_test.csv). Every test figure comes with its 95 % bootstrap interval over
patient groups (:func:`cxr_utils.evaluate.evaluate_predictions`, 2,000 replicates, seed 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cxr_utils import CLASSES
from cxr_utils import evaluate as ev

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def summary(n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per run: validation accuracy, test accuracy, per-class test recall and macro AUC with intervals."""
    folders = {"improved_v1": RESULTS / "improved_v1"}
    folders.update({p.name: p for p in sorted((RESULTS / "candidates").iterdir()) if (p / "metrics.json").exists()})
    rows = {}
    for name, folder in folders.items():
        metrics = json.loads((folder / "metrics.json").read_text())
        test = ev.evaluate_predictions(pd.read_csv(folder / "predictions_test.csv"), n_boot=n_boot, seed=seed)
        row = {"val accuracy": round(metrics["val"]["accuracy"], 3)}
        cells = [("test accuracy", test.overall.loc["accuracy"])]
        cells += [(f"test recall {c}", test.per_class.loc[(c, "recall")]) for c in CLASSES]
        cells.append(("test macro AUC", test.overall.loc["macro AUC (one-vs-rest)"]))
        for key, r in cells:
            row[key] = ev.interval_text(r["estimate"], r["ci_low"], r["ci_high"])
        row.update({"image size": metrics["image_size"], "epochs": metrics["epochs_run"],
                    "best epoch": metrics["best_epoch"] + 1, "params": metrics["params"],
                    "s/epoch (median)": round(metrics["seconds_per_epoch"])})
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("run")


def main() -> None:
    table = summary()
    out = RESULTS / "candidates" / "summary.csv"
    table.to_csv(out)
    print(table.to_string())
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
