"""Lesson 07 (evaluation) runs end to end in smoke mode, on real predictions and with a recipe missing.

The predictions come from a real (tiny) model: a logistic regression on 16x16 grey versions of the
curated images, fitted on a training subset and applied to the whole test split, written in the run
format of lesson 06. No Keras training and no weights are needed, as in CI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "07_evaluation.ipynb"


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory, curated_data_dir) -> Path:
    """``results/<recipe>/predictions_test.csv`` of two logistic regressions on the real test split."""
    from sklearn.linear_model import LogisticRegression

    from cxr_utils import data

    x_train, y_train = data.load_split("train", 16, 1, subset=600, seed=0)
    x_test, _ = data.load_split("test", 16, 1)
    test = data.load_manifest().query("split == 'test'")
    root = tmp_path_factory.mktemp("results")
    for recipe, c in (("paper", 0.01), ("improved", 1.0)):
        model = LogisticRegression(C=c, max_iter=500).fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)
        probs = model.predict_proba(x_test.reshape(len(x_test), -1) / 255.0)
        out = test[["path", "label", "split_group"]].copy()
        for j, name in enumerate(CLASSES):
            out[f"p_{name}"] = probs[:, j]
        (root / recipe).mkdir()
        out.to_csv(root / recipe / "predictions_test.csv", index=False)
    return root


@pytest.mark.notebook
def test_notebook_07_evaluates_both_recipes_with_intervals_in_smoke_mode(run_lesson, results_dir):
    run = run_lesson(NOTEBOOK.name, results_dir=str(results_dir))
    text = run.text
    df = pd.read_csv(results_dir / "improved" / "predictions_test.csv")
    pred = df[[f"p_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)
    cm = pd.crosstab(df["label"], pd.Series(np.array(CLASSES)[pred], name="predicted"))
    row = " ".join(str(v) for v in cm.loc["Normal"].reindex(CLASSES, fill_value=0))
    assert any(line.split()[1:] == row.split() for line in text.splitlines() if line.startswith("Normal "))
    groups = df["split_group"].nunique()
    assert f"200 replicates over patient groups (split_group): {groups} groups for {len(df)} images" in text
    numpy_line = next(line for line in text.splitlines() if "NumPy precision" in line)
    ours, keras_ = numpy_line.split("|")
    assert ours.split("precision")[1].strip() == keras_.split("precision")[1].strip()  # same precision, recall
    assert "paper's figure in improved recipe CI" in text
    assert "McNemar exact test: p =" in text
    assert "Smoke mode: the external evaluation is skipped" in text
    assert run.figures == 4  # confusion matrices, ROC, reliability, paper vs ours


@pytest.mark.notebook
def test_notebook_07_names_a_missing_recipe_and_runs_on_with_the_other(run_lesson, results_dir, tmp_path):
    only_paper = tmp_path / "results"
    shutil.copytree(results_dir / "paper", only_paper / "paper")
    text = run_lesson(NOTEBOOK.name, results_dir=str(only_paper)).text
    assert "improved: results/improved/predictions_test.csv is missing" in text
    assert "Skipped: the paired comparison needs both recipes; missing results for ['improved']" in text
    assert "ours, paper recipe" in text
