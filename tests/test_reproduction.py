"""A run trained again says whether it reproduced the committed record of its recipe (``compare.reproduction``)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cxr_utils import compare, runs
from cxr_utils.predictions import PROB_COLUMNS


@pytest.fixture
def committed(tiny_run, tmp_path):
    """The tiny run's files exported as a committed record would be (``results/<name>``)."""
    runs.export_results(tiny_run, tmp_path / "committed")
    return tmp_path / "committed"


def test_a_run_against_its_own_record_reproduces_it(tiny_run, committed):
    table = compare.reproduction(tiny_run, committed)
    assert table.attrs["reproduced"] and table.attrs["images"] == len(pd.read_csv(tiny_run / "predictions_test.csv"))
    assert (table["difference"] == 0).all()


def test_a_different_run_names_the_figures_that_differ_and_by_how_much(tiny_run, committed):
    pred = pd.read_csv(committed / "predictions_test.csv")
    cols = list(PROB_COLUMNS)
    first = pred.loc[0, cols].to_numpy()
    pred.loc[0, cols] = first[[1, 2, 0]]  # another call for the first image
    pred.to_csv(committed / "predictions_test.csv", index=False)
    metrics = json.loads((committed / "metrics.json").read_text())
    metrics["test"]["accuracy"] -= 0.01
    (committed / "metrics.json").write_text(json.dumps(metrics))
    table = compare.reproduction(tiny_run, committed)
    assert not table.attrs["reproduced"]
    assert table.loc["test images called differently", "this run"] == 1
    largest = abs(first - first[[1, 2, 0]]).max()
    assert table.loc["largest test probability difference", "this run"] == pytest.approx(largest)
    assert table.loc["test accuracy", "difference"] == pytest.approx(0.01)
    assert table.loc["val accuracy", "difference"] == 0


def test_records_of_another_recipe_or_other_images_are_refused(tiny_run, committed, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(committed, other)
    metrics = json.loads((other / "metrics.json").read_text())
    (other / "metrics.json").write_text(json.dumps({**metrics, "recipe": "paper"}))
    with pytest.raises(ValueError, match="recipe"):
        compare.reproduction(tiny_run, other)
    pred = pd.read_csv(committed / "predictions_test.csv")
    pred.iloc[1:].to_csv(committed / "predictions_test.csv", index=False)
    with pytest.raises(ValueError, match="different test images"):
        compare.reproduction(tiny_run, committed)


def test_figures_inside_another_runs_intervals_are_told_from_figures_outside(tiny_run, committed):
    same = compare.within_intervals(tiny_run, committed, n_boot=200)
    assert list(same.index) == ["test accuracy", "test recall COVID-19", "test recall Normal", "test recall Pneumonia"]
    assert same["inside"].all()
    pred = pd.read_csv(committed / "predictions_test.csv")
    cols = list(PROB_COLUMNS)
    probs = pred[cols].to_numpy()
    truth = pred["label"].map({c[2:]: k for k, c in enumerate(cols)}).to_numpy()
    probs[:] = 0.0
    probs[range(len(pred)), truth] = 1.0  # a run that calls every test image right
    pred[cols] = probs
    pred.to_csv(committed / "predictions_test.csv", index=False)
    perfect = compare.within_intervals(committed, tiny_run, n_boot=200)
    assert perfect.loc["test accuracy", "run"] == 1.0
    assert not perfect.loc["test accuracy", "inside"]  # a tiny run's interval does not reach 1.0
