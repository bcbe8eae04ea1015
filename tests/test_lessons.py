"""Every lesson runs end to end at smoke parameters and shows what it teaches, checked on its one execution.

Each lesson is executed once per test session (by nbval when the suite runs with ``--nbval-lax``, else by
papermill; see the root ``conftest.py``), and every check here reads that execution: facts the lesson
prints, recomputed here from the data or the committed results where they can be, never just "it ran".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES, decisions, external, paths, predictions, shortcuts

pytestmark = pytest.mark.notebook
REPO = Path(__file__).resolve().parents[1]


def test_lesson_01_curates_once_and_reports_a_patient_level_split(lesson) -> None:
    run = lesson("01_data_curation.ipynb")
    assert "patient groups in more than one split: 0" in run.text
    assert "Curated" in run.text and "unchanged" in run.text  # the lesson re-used the split written once
    assert run.figures == 5  # funnel, duplicate pairs, counts vs paper, samples, age and source


def test_lesson_02_measures_the_paper_contrast_cut(lesson) -> None:
    run = lesson("02_augmentation.ipynb")
    assert "reads 96 px, returns 80 px" in run.text
    assert run.number(r"\(ratio ([0-9.]+)x\)") > 3  # test images have several times the contrast of paper-augmented
    assert run.figures >= 5


def test_lesson_03_builds_both_models_and_times_the_small_one(lesson) -> None:
    run = lesson("03_architecture.ipynb")
    assert "paper_dcnn at 80x80x3: 63,148,835 parameters" in run.text
    assert "efficient_cnn" in run.text and "images/s" in run.text
    assert "total: 406.9 M multiply-adds per 80x80 image" in run.text
    gmp = run.number(r"global max pooling features: ([0-9.]+)")
    flat = run.number(r"flattened features: ([0-9.]+)")
    assert gmp < flat  # max-pooled features move less than the flattened map when the image shifts


def test_lesson_04_compares_smoothing_schemes_trains_twice_and_weighs_classes(lesson) -> None:
    run = lesson("04_loss_and_label_smoothing.ipynb")
    assert "Keras, eps=0.12 (script) 0.92 0.04 0.04" in run.text
    assert "paper formula (2), eps=0.12 0.88 0.06 0.06" in run.text
    assert "paper's formula (3), eps=0.12 q = 0.33" in run.text
    assert run.text.count("label_smoothing=0.0:") == 1 and run.text.count("label_smoothing=0.12:") == 1
    assert "our curated training split (manifest)" in run.text


def test_lesson_05_tabulates_schedules_reloads_one_and_sweeps_the_rate_to_its_end(lesson) -> None:
    run = lesson("05_lr_schedules.ipynb")
    # the script's rate changes between the last batch of epoch 2 and the first of epoch 3
    assert "step 527 (epoch 2): script 4.00e-04" in run.text
    assert "step 528 (epoch 3): script 2.00e-04" in run.text
    assert "schedule after reload: EpochStepDecay" in run.text
    done, asked = (int(v) for v in re.search(r"(\d+) of (\d+) steps run", run.text).groups())
    last = run.number(r"last rate ([0-9.e+-]+)")
    assert 0 < done <= asked == 12  # the smoke sweep
    if done == asked:  # a sweep that did not diverge ends at max_lr = 1.0, exponentially from 1e-6
        assert last == pytest.approx(1.0)
    for curve in ("smoothed", "median"):  # the lagging moving average and the running median, each suggested
        suggestions = json.loads(run.line(f"{curve}:").split(":", 1)[1].replace("'", '"'))
        assert set(suggestions) == {"min_loss", "min_loss_over_10", "steepest"}
        assert all(1e-6 <= float(v) <= 1.0 for v in suggestions.values()), curve
        if curve == "smoothed":
            chosen = float(f"{float(suggestions['min_loss_over_10']):.0e}")  # the lesson's rule, one digit
    assert run.number(r"chosen peak rate: ([0-9.e+-]+)") == pytest.approx(chosen)
    assert run.figures >= 2


def test_lesson_06_trains_both_recipes_into_complete_run_folders_and_exports_nothing(lesson) -> None:
    before = sorted(p.relative_to(REPO / "results") for p in (REPO / "results").rglob("*"))
    run = lesson("06_training.ipynb")
    for name in ("paper", "improved"):
        folder = paths.runs_dir() / f"smoke-{name}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["complete"] and metrics["recipe"] == name and metrics["epochs_run"] == 1
        assert f"--- {name}: history of" in run.text
    assert "epoch 1/1 loss" in run.text  # the compact one-line-per-epoch output
    assert "63,148,835 parameters" in run.text and "747,683 parameters" in run.text
    assert "improved / paper: 1.18%" in run.text
    assert "validation tags ['epoch_accuracy', 'epoch_loss'" in run.text
    differences = [float(v) for v in re.findall(r"max difference reloaded vs saved probabilities ([0-9.e+-]+)",
                                                run.text)]
    assert len(differences) == 3 and max(differences) <= 1e-5  # paper, improved, the ablation reload as saved
    assert run.figures == 2  # training curves, batch-norm spread ratio
    assert sorted(p.relative_to(REPO / "results") for p in (REPO / "results").rglob("*")) == before


def test_lesson_07_recomputes_the_committed_results_with_intervals(lesson) -> None:
    run = lesson("07_evaluation.ipynb")
    df = predictions.load_predictions(REPO / "results" / "improved" / "predictions_test.csv")
    cm = pd.crosstab(df["label"], pd.Series(np.array(CLASSES)[predictions.predicted(df)], name="predicted"))
    row = " ".join(str(v) for v in cm.loc["Normal"].reindex(CLASSES, fill_value=0))
    assert any(line.split()[1:] == row.split() for line in run.text.splitlines() if line.startswith("Normal "))
    groups = df["split_group"].nunique()
    assert f"200 replicates over patient groups (split_group): {groups} groups for {len(df)} images" in run.text
    ours, keras_ = run.line("NumPy precision").split("|")
    assert ours.split("precision")[1].strip() == keras_.split("precision")[1].strip()  # same precision, recall
    assert "paper's figure in improved recipe CI" in run.text
    assert "McNemar exact test: p =" in run.text
    if os.environ.get("CXR_SMOKE") == "1":
        assert "Smoke mode: the external evaluation is skipped" in run.text
    probs, y = predictions.probabilities(df), predictions.true_labels(df)
    cost = 1 - np.eye(len(CLASSES))
    cost[0, 1:] = 10  # section 10: a missed COVID-19 costs ten false alarms
    totals = (cost[y, probs.argmax(axis=1)].sum(), cost[y, decisions.bayes_calls(probs, cost)].sum())
    assert f"total cost: argmax {totals[0]:.0f}, least expected cost {totals[1]:.0f}" in run.text
    assert run.figures == 5  # confusion matrices, ROC, reliability, paper vs ours, the COVID-19 trade-off


def test_lesson_08_runs_its_experiments_and_reports_what_their_predictions_say(lesson) -> None:
    run = lesson("08_what_the_model_learned.ipynb")
    assert "Research and teaching use only" in run.text  # the panel's notice
    assert "--- paper: 13 layers with weights" in run.text and "--- improved: 17 layers with weights" in run.text
    for name in ("control_64", "lungs_hidden", "border_only"):
        df = predictions.load_predictions(paths.runs_dir() / f"smoke-{name}" / "predictions_test.csv")
        accuracy = float((predictions.predicted(df) == predictions.true_labels(df)).mean())
        assert re.search(rf"^{name} {accuracy:.3f} \[", run.text, re.M), name  # the table shows what the run predicted
    labels = predictions.true_labels(df)
    assert f"always the largest class scores {np.bincount(labels).max() / len(labels):.3f} accuracy" in run.text
    source = pd.read_csv(paths.runs_dir() / "smoke-source_prediction" / "predictions_test.csv")
    named = np.array(shortcuts.SOURCES)[source[[f"p_{s}" for s in shortcuts.SOURCES]].to_numpy().argmax(axis=1)]
    assert run.number(r"\naccuracy ([0-9.]+) ") == pytest.approx((named == source["source"]).mean(), abs=5e-4)
    # ages per class and source: Cohen's COVID-19 patients have ages, Kaggle's Normal children none in the metadata
    assert re.search(r"^ ?cohen \d+ [1-9]\d* [\d.]+ ", run.text, re.M)
    assert re.search(r"^Normal kaggle \d+ 0 NaN", run.text, re.M)
    if os.environ.get("CXR_EXTERNAL_DIR"):
        assert "external Normals: 150 join training, 150 are kept for testing" in run.text
        config = json.loads((paths.runs_dir() / "smoke-deconfounded_64" / "config.json").read_text())
        assert config["extra_train"] == "external_normals" and config["recipe"] == "deconfounded_64"
        assert "kept adult Normals called COVID-19" in run.text and "McNemar exact p" in run.text
        # the full-size experiment is read from the committed results: their kept Normals called COVID-19
        committed = {name: predictions.load_predictions(REPO / "results" / folder / "predictions_external.csv")
                     for name, folder in (("improved", "improved"), ("deconfounded", "lesson08/deconfounded"))}
        k = external.kept_calls(committed, os.environ["CXR_EXTERNAL_DIR"]).xs("kept adult Normals called COVID-19")["k"]
        assert re.search(rf"^kept adult Normals called COVID-19 improved {k['improved']} 150 [^\n]*\n ?deconfounded "
                         rf"{k['deconfounded']} 150 ", run.text, re.M)
    else:
        assert "CXR_EXTERNAL_DIR is not set" in run.text
    assert run.figures >= 6  # galleries, Grad-CAM overlays, randomisation check, what the masked runs see
    assert "lesson 08 ran in" in run.text
