#!/usr/bin/env python3
"""Summarise the first improved recipe and the candidates tried after it into results/candidates/summary.csv.

    python tools/candidates.py            # rewrite results/candidates/summary.csv and print it

Reads only committed files: ``results/improved_v1/`` and ``results/candidates/<name>/`` (metrics.json,
predictions_val.csv, predictions_test.csv). Every test figure comes with its 95 % bootstrap interval over
patient groups (:func:`cxr_utils.compare.runs_table`, 2,000 replicates, seed 0).
"""

from __future__ import annotations

from pathlib import Path

from cxr_utils.compare import runs_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results"


def main() -> None:
    folders = {"improved_v1": RESULTS / "improved_v1"}
    folders.update({p.name: p for p in sorted((RESULTS / "candidates").iterdir()) if (p / "metrics.json").exists()})
    table = runs_table(folders)
    out = RESULTS / "candidates" / "summary.csv"
    table.to_csv(out)
    print(table.to_string())
    print(f"written: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
