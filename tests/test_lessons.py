"""Lessons 01-05 run end to end under papermill at smoke parameters, and say what they teach.

Each test checks facts the lesson prints, computed in the run, not just that it finished.
(Lessons 06 and 07 have their own files: they also check run folders and results.)
"""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.notebook


def test_lesson_01_curates_once_and_reports_a_patient_level_split(run_lesson, curated_data_dir) -> None:
    run = run_lesson("01_data_curation.ipynb")
    assert "patient groups in more than one split: 0" in run.text
    assert "Curated" in run.text and "unchanged" in run.text  # the lesson re-used the split written once
    assert run.figures == 5  # funnel, duplicate pairs, counts vs paper, samples, age and source


def test_lesson_02_measures_the_paper_contrast_cut(run_lesson, curated_data_dir) -> None:
    run = run_lesson("02_augmentation.ipynb")
    assert "reads 96 px, returns 80 px" in run.text
    ratio = float(run.text.split("(ratio ")[1].split("x)")[0])
    assert ratio > 3  # test images have several times the per-image contrast of paper-augmented ones
    assert run.figures >= 5


def test_lesson_03_builds_both_models_and_times_the_small_one(run_lesson) -> None:
    run = run_lesson("03_architecture.ipynb")
    assert "paper_dcnn at 80x80x3: 63,148,835 parameters" in run.text
    assert "efficient_cnn" in run.text and "images/s" in run.text
    assert "total: 406.9 M multiply-adds per 80x80 image" in run.text
    gmp = float(re.search(r"global max pooling features: ([0-9.]+)", run.text).group(1))
    flat = float(re.search(r"flattened features: ([0-9.]+)", run.text).group(1))
    assert gmp < flat  # max-pooled features move less than the flattened map when the image shifts


def test_lesson_04_compares_smoothing_schemes_trains_twice_and_weighs_classes(run_lesson, curated_data_dir) -> None:
    run = run_lesson("04_loss_and_label_smoothing.ipynb")
    assert "Keras, eps=0.12 (script) 0.92 0.04 0.04" in run.text
    assert "paper formula (2), eps=0.12 0.88 0.06 0.06" in run.text
    assert "paper's formula (3), eps=0.12 q = 0.33" in run.text
    assert run.text.count("label_smoothing=0.0:") == 1 and run.text.count("label_smoothing=0.12:") == 1
    assert "our curated training split (manifest)" in run.text


def test_lesson_05_tabulates_schedules_reloads_one_and_runs_a_range_test(run_lesson, curated_data_dir) -> None:
    run = run_lesson("05_lr_schedules.ipynb")
    # the script's rate changes between the last batch of epoch 2 and the first of epoch 3
    assert "step 527 (epoch 2): script 4.00e-04" in run.text
    assert "step 528 (epoch 3): script 2.00e-04" in run.text
    assert "schedule after reload: EpochStepDecay" in run.text
    assert "steps run; stopped on divergence:" in run.text
    assert "chosen peak rate:" in run.text
    assert run.figures >= 2
