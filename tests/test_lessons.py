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

from cxr_utils import CLASSES, paths, predictions

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
    suggestions = json.loads(run.line("{'min_loss'").replace("'", '"'))
    assert all(1e-6 <= float(v) <= 1.0 for v in suggestions.values())
    assert 1e-6 <= run.number(r"chosen peak rate: ([0-9.e+-]+)") <= 1.0
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
    assert run.figures == 4  # confusion matrices, ROC, reliability, paper vs ours
