"""Tests for cxr_utils.evaluate: metrics against hand-computed matrices, Keras' own metrics, intervals, tests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES, compare, external, metrics, paper, plots, predictions, runs
from cxr_utils import evaluate as ev

# A confusion matrix worked out by hand (rows actual, columns predicted): 50 images.
HAND = np.array([[8, 1, 1], [2, 15, 3], [0, 4, 16]])


def _table(y_true, probs, groups=None) -> pd.DataFrame:
    """A predictions table in the run format for given labels and probabilities."""
    n = len(y_true)
    df = pd.DataFrame({"path": [f"img{i:05d}.png" for i in range(n)], "label": [CLASSES[i] for i in y_true],
                       "split_group": groups if groups is not None else [f"patient{i}" for i in range(n)]})
    for j, col in enumerate(predictions.PROB_COLUMNS):
        df[col] = np.asarray(probs)[:, j]
    return df


def _from_confusion(cm, confidence=0.8) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose argmax gives exactly the confusion matrix ``cm``."""
    y, probs = [], []
    for i in range(3):
        for j in range(3):
            row = np.full(3, (1 - confidence) / 2)
            row[j] = confidence
            y += [i] * int(cm[i][j])
            probs += [row] * int(cm[i][j])
    return np.array(y), np.array(probs)


# --- metrics against hand computations ------------------------------------------------------------


def test_confusion_matrix_counts_rows_actual_and_columns_predicted():
    y, p = _from_confusion(HAND)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, p.argmax(1)), HAND)


def test_metrics_of_a_hand_computed_confusion_matrix():
    m = metrics.metrics_from_confusion(HAND)
    assert m["accuracy"] == pytest.approx(39 / 50)
    np.testing.assert_allclose(m["precision"], [8 / 10, 15 / 20, 16 / 20])
    np.testing.assert_allclose(m["recall"], [8 / 10, 15 / 20, 16 / 20])
    np.testing.assert_allclose(m["specificity"], [38 / 40, 25 / 30, 26 / 30])
    np.testing.assert_allclose(m["f1"], [16 / 20, 30 / 40, 32 / 40])
    assert m["macro_specificity"] == pytest.approx((38 / 40 + 25 / 30 + 26 / 30) / 3)


def test_an_empty_class_has_undefined_metrics_and_the_macro_average_skips_it():
    cm = np.array([[0, 0, 0], [0, 5, 1], [0, 2, 7]])
    m = metrics.metrics_from_confusion(cm)
    assert np.isnan(m["recall"][0]) and np.isnan(m["precision"][0]) and np.isnan(m["f1"][0])
    assert m["specificity"][0] == 1.0  # 15 negatives, none called COVID-19
    assert m["macro_recall"] == pytest.approx((5 / 6 + 7 / 9) / 2)
    # absent but predicted once: precision 0 (defined), recall still undefined
    m2 = metrics.metrics_from_confusion(np.array([[0, 0, 0], [1, 4, 1], [0, 2, 7]]))
    assert m2["precision"][0] == 0.0 and np.isnan(m2["recall"][0]) and m2["f1"][0] == 0.0


def test_a_perfect_classifier_scores_one_everywhere_with_intervals_at_one():
    y, p = _from_confusion(np.diag([20, 30, 40]), confidence=0.9)
    rep = ev.evaluate_predictions(_table(y, p), n_boot=200)
    metrics = ["precision", "recall", "specificity", "F1", "AUC"]
    assert (rep.per_class.loc[(slice(None), metrics), "estimate"] == 1).all()
    assert rep.overall.loc["accuracy", ["estimate", "ci_low", "ci_high"]].tolist() == [1.0, 1.0, 1.0]
    assert rep.overall.loc["recall (Keras micro, 0.5)", "estimate"] == 1.0
    assert rep.overall.loc["expected calibration error", "estimate"] == pytest.approx(0.1)  # 90 % sure, always right


def test_weights_act_as_repeated_images():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60)
    w = rng.integers(0, 4, 60)
    rep_y, rep_p = np.repeat(y, w), np.repeat(probs, w, axis=0)
    np.testing.assert_allclose(metrics.confusion_matrix(y, probs.argmax(1), weights=w),
                               metrics.confusion_matrix(rep_y, rep_p.argmax(1)))
    np.testing.assert_allclose(metrics.keras_micro_precision_recall(y, probs, weights=w),
                               metrics.keras_micro_precision_recall(rep_y, rep_p))
    assert metrics.roc_auc(y == 1, probs[:, 1], w) == pytest.approx(metrics.roc_auc(rep_y == 1, rep_p[:, 1]))
    ece = metrics.expected_calibration_error(rep_y, rep_p)
    assert metrics.expected_calibration_error(y, probs, weights=w) == pytest.approx(ece)


# --- the paper's metrics as Keras computes them ----------------------------------------------------


def test_keras_style_micro_precision_and_recall_equal_keras_metrics():
    import keras

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    onehot = np.eye(3)[y].astype("float32")
    for probs in (rng.dirichlet([0.6, 0.6, 0.6], 300), rng.uniform(size=(300, 3))):  # softmax-like, and >1 above 0.5
        precision, recall = metrics.keras_micro_precision_recall(y, probs)
        kp, kr = keras.metrics.Precision(), keras.metrics.Recall()
        kp.update_state(onehot, probs.astype("float32"))
        kr.update_state(onehot, probs.astype("float32"))
        assert precision == pytest.approx(float(kp.result()), abs=1e-6)
        assert recall == pytest.approx(float(kr.result()), abs=1e-6)


def test_auc_equals_scikit_learn_including_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    positive = rng.uniform(size=200) < 0.3
    scores = np.round(rng.uniform(size=200) + 0.3 * positive, 1)  # coarse: many ties
    assert metrics.roc_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores))


def test_a_run_reproducing_table_5_reproduces_the_papers_figures_and_falls_inside_its_intervals():
    y, p = _from_confusion(paper.CONFUSION.to_numpy())
    rep = ev.evaluate_predictions(_table(y, p), n_boot=300, name="copy")
    table = compare.compare_with_paper({"copy": rep})
    for key in [("overall", "accuracy"), ("Normal", "recall"), ("Pneumonia", "precision"), ("COVID-19", "specificity")]:
        assert table.loc[key, "copy"] == pytest.approx(table.loc[key, "published"], abs=5e-4)  # rounded in the paper
        assert table.loc[key, "published in copy CI"] == True  # noqa: E712 (a pandas object cell)
    assert table.loc[("overall", "accuracy"), "published"] == pytest.approx(0.873, abs=5e-4)
    assert rep.confusion.to_numpy().tolist() == paper.CONFUSION.to_numpy().tolist()


# --- intervals ---------------------------------------------------------------------------------------


def test_wilson_interval_matches_newcombes_textbook_values():
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (score interval without continuity correction)
    assert metrics.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert metrics.wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert metrics.wilson_interval(0, 20) == pytest.approx((0.0, 0.1611), abs=1e-4)
    assert all(np.isnan(metrics.wilson_interval(0, 0)))


def _patients(n_patients: int, seed: int = 0) -> pd.DataFrame:
    """Each patient has two images; 3 in 4 patients are classified right on both (same proportions at any size)."""
    y = np.tile([0, 0, 1, 1, 2, 2, 1, 1], n_patients // 4)
    right = np.tile([1, 1, 1, 1, 1, 1, 0, 0], n_patients // 4).astype(bool)
    pred = np.where(right, y, (y + 1) % 3)
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    groups = np.repeat([f"p{i}" for i in range(n_patients)], 2)
    return _table(y, probs, groups)


def test_bootstrap_intervals_contain_the_estimate_and_shrink_with_four_times_the_patients():
    small = ev.evaluate_predictions(_patients(40), n_boot=1000, seed=3)
    large = ev.evaluate_predictions(_patients(160), n_boot=1000, seed=3)
    for rep in (small, large):
        t = rep.overall.dropna(subset=["ci_low"])
        assert ((t["ci_low"] <= t["estimate"]) & (t["estimate"] <= t["ci_high"])).all()
        assert rep.resample_unit.startswith("patient groups")
    acc_small, acc_large = small.overall.loc["accuracy"], large.overall.loc["accuracy"]
    assert acc_small["estimate"] == acc_large["estimate"] == 0.75
    width_small = acc_small["ci_high"] - acc_small["ci_low"]
    width_large = acc_large["ci_high"] - acc_large["ci_low"]
    assert 0.35 < width_large / width_small < 0.65  # about 1/sqrt(4)


def test_patient_bootstrap_is_wider_than_wilson_when_a_patients_images_agree():
    rep = ev.evaluate_predictions(_patients(80), n_boot=2000, seed=0)
    acc = rep.overall.loc["accuracy"]
    assert (acc["ci_high"] - acc["ci_low"]) > 1.2 * (acc["wilson_high"] - acc["wilson_low"])


def test_images_without_a_patient_group_are_resampled_one_by_one():
    df = _patients(8)
    df.loc[:3, "split_group"] = None
    codes, text = metrics.resampling_groups(predictions.validate_predictions(df))
    assert len(np.unique(codes)) == 4 + 6  # 4 lone images + the 6 intact patients
    assert "4 without a group" in text
    w = metrics.bootstrap_weights(codes, 50, seed=0)
    assert w.shape == (50, 16)
    assert (w[:, :4].sum(axis=1) + w[:, 4::2].sum(axis=1) == 10).all()  # each replicate draws 10 units
    assert (w[:, 4::2] == w[:, 5::2]).all()  # a patient's two images always come together


# --- calibration ---------------------------------------------------------------------------------------


def _confident(n: int, confidence: float, right: int) -> tuple[np.ndarray, np.ndarray]:
    probs = np.tile([confidence, (1 - confidence) / 2, (1 - confidence) / 2], (n, 1))
    y = np.where(np.arange(n) < right, 0, 1)
    return y, probs


def test_ece_is_zero_when_confidence_equals_accuracy_and_the_gap_otherwise():
    assert metrics.expected_calibration_error(*_confident(1000, 0.9, 900)) == pytest.approx(0.0, abs=1e-12)
    assert metrics.expected_calibration_error(*_confident(1000, 0.9, 600)) == pytest.approx(0.3)


def test_ece_of_a_calibrated_random_model_is_small_and_of_an_overconfident_one_large():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.34, 1.0, 20000)
    probs = np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], axis=1)
    y_calibrated = np.where(rng.uniform(size=conf.size) < conf, 0, 1)
    y_overconfident = np.where(rng.uniform(size=conf.size) < conf**3, 0, 1)
    assert metrics.expected_calibration_error(y_calibrated, probs) < 0.015
    assert metrics.expected_calibration_error(y_overconfident, probs) > 0.15
    table = metrics.calibration_table(y_calibrated, probs)
    assert table["images"].sum() == 20000 and table.loc[:2, "images"].sum() == 0  # nothing below 1/3 confidence


# --- two runs on the same images ------------------------------------------------------------------------


def test_mcnemar_exact_matches_a_hand_computation():
    a = np.array([True] * 2 + [False] * 8 + [True] * 30 + [False] * 5)
    b = np.array([False] * 2 + [True] * 8 + [True] * 30 + [False] * 5)
    result = metrics.mcnemar_exact(a, b)
    # b = 2, c = 8: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024
    assert (result["only_a"], result["only_b"]) == (2, 8)
    assert result["p_value"] == pytest.approx(112 / 1024)
    assert metrics.mcnemar_exact(b, a)["p_value"] == pytest.approx(112 / 1024)
    assert metrics.mcnemar_exact(a, a)["p_value"] == 1.0


def test_paired_comparison_counts_agreements_and_bootstraps_the_difference_over_patients():
    df_a = _patients(40)
    df_b = df_a.copy()
    y = predictions.true_labels(df_a)
    fix = np.flatnonzero(predictions.probabilities(df_a).argmax(1) != y)[:10]  # B gets 10 of A's mistakes right
    probs = predictions.probabilities(df_b).copy()
    probs[fix] = np.eye(3)[y[fix]] * 0.7 + 0.1
    df_b[list(predictions.PROB_COLUMNS)] = probs
    out = compare.paired_comparison(df_a.sample(frac=1, random_state=0), df_b, ("A", "B"), n_boot=500)
    assert out["only B right"] == 10 and out["only A right"] == 0
    assert out["both right"] + out["both wrong"] + 10 == 80
    assert out["difference (B - A)"] == pytest.approx(10 / 80)
    assert 0 < out["difference ci_low"] <= 10 / 80 <= out["difference ci_high"]
    assert out["McNemar exact p"] == pytest.approx(2 / 2**10)
    with pytest.raises(predictions.PredictionsError, match="different images"):
        compare.paired_comparison(df_a, df_b.iloc[1:], ("A", "B"))


# --- reading predictions ---------------------------------------------------------------------------------


def test_a_missing_predictions_file_or_column_is_named_with_the_fix(tmp_path):
    with pytest.raises(predictions.PredictionsError, match="not found; train a run"):
        predictions.load_predictions(tmp_path / "results" / "paper" / "predictions_test.csv")
    y, p = _from_confusion(HAND)
    _table(y, p).drop(columns="p_Normal").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(predictions.PredictionsError, match=r"bad\.csv.*p_Normal"):
        predictions.load_predictions(tmp_path / "bad.csv")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda df: df.iloc[:0], "no rows"),
    (lambda df: df.assign(path=df["path"].where(df.index != 3, "")), r"empty path \(row 4\)"),
    (lambda df: df.assign(path=df["path"].where(df.index != 3, df["path"].iloc[0])), "more than once"),
    (lambda df: df.assign(label=df["label"].where(df.index != 5, None)), r"empty label \(row 6"),
    (lambda df: df.assign(label=df["label"].where(df.index != 5, "Tuberculosis")), "Tuberculosis"),
    (lambda df: df.assign(p_Normal=df["p_Normal"].where(df.index != 7, np.nan)), r"not numbers in \[0, 1\] \(row 8"),
    (lambda df: df.assign(p_Normal=df["p_Normal"].where(df.index != 7, 1.5)), r"not numbers in \[0, 1\] \(row 8"),
    (lambda df: df.assign(p_Normal=df["p_Normal"].where(df.index != 7, -0.1)), r"not numbers in \[0, 1\]"),
    (lambda df: df.assign(p_Normal=df["p_Normal"].astype(object).where(df.index != 7, "high")), "not numbers"),
])
def test_a_damaged_predictions_table_is_refused_naming_what_is_wrong(tmp_path, damage, message):
    y, p = _from_confusion(HAND)
    good = _table(y, p)
    assert len(predictions.validate_predictions(good)) == len(good)
    damage(good).to_csv(tmp_path / "damaged.csv", index=False)
    with pytest.raises(predictions.PredictionsError, match=message):
        predictions.load_predictions(tmp_path / "damaged.csv")


def test_report_on_the_real_test_split_resamples_its_patient_groups(curated_data_dir):
    from cxr_utils import data

    test = data.load_manifest().query("split == 'test'")
    y = predictions.true_labels(test)
    probs = np.eye(3)[y] * 0.7 + 0.1
    probs[::7] = np.eye(3)[(y[::7] + 1) % 3] * 0.7 + 0.1  # every 7th image wrong
    df = predictions.predictions_frame(test, probs)
    rep = ev.evaluate_predictions(df, n_boot=200)
    assert rep.n_units == test["split_group"].nunique() < len(test)
    assert rep.overall.loc["accuracy", "k"] == len(test) - len(y[::7])
    assert rep.true_class_probability["images"].sum() == len(test)


# --- the external set and predicting arbitrary files ------------------------------------------------------


def test_external_images_lists_both_folders_or_names_what_is_missing(tmp_path, mirror):
    with pytest.raises(FileNotFoundError, match="COVID-19_Radiography_Dataset"):
        external.external_images(tmp_path)
    src = sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[:2]
    for folder in ("COVID", "Normal"):
        d = tmp_path / "COVID-19_Radiography_Dataset" / folder
        d.mkdir(parents=True)
        for i, f in enumerate(src):
            shutil.copy(f, d / f"{folder}-{i}.png")  # a JPEG under a .png name, as messy sets have
    ext = external.external_images(tmp_path)
    assert ext["label"].value_counts().to_dict() == {"COVID-19": 2, "Normal": 2}
    assert ext["split_group"].isna().all() and not ext["path"].str.startswith("/").any()


def test_external_set_holds_300_covid_and_300_normal_images(external_dir):
    ext = external.external_images(external_dir)
    assert ext["label"].value_counts().to_dict() == {"COVID-19": 300, "Normal": 300}


def test_run_preprocessing_reads_size_and_channels_and_find_run_wants_a_complete_run(tmp_path):
    root = tmp_path / "runs"
    run = root / "improved-20ep-64px"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"recipe": "improved", "image_size": 64, "channels": 1}))
    assert runs.preprocessing(run) == (64, 1)
    (run / "best.keras").write_bytes(b"")
    assert runs.find_run("improved", root) is None  # no metrics.json yet: still training
    (run / "metrics.json").write_text(json.dumps({"complete": True}))
    assert runs.find_run("improved", root) == run
    assert runs.find_run("paper", root) is None
    exact = root / "improved"
    shutil.copytree(run, exact)
    (exact / "config.json").write_text(json.dumps({"recipe": "improved", "image_size": 128, "channels": 3}))
    assert runs.find_run("improved", root) == exact  # the recipe as defined wins over variants
    assert runs.preprocessing(exact) == (128, 3)


def test_a_folder_that_is_not_a_course_run_is_named_as_such(tmp_path):
    with pytest.raises(runs.RunFolderError, match="does not exist"):
        runs.read_config(tmp_path / "nowhere")
    with pytest.raises(runs.RunFolderError, match="no config.json"):
        runs.read_config(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(runs.RunFolderError, match="not a run configuration"):
        runs.preprocessing(tmp_path)
    (tmp_path / "config.json").write_text('{"recipe": "impr')  # truncated
    with pytest.raises(runs.RunFolderError, match="cannot be read"):
        runs.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"recipe": "improved", "image_size": 64}))
    with pytest.raises(runs.RunFolderError, match="not a complete run"):
        runs.require_complete(tmp_path)


def test_external_summary_compares_covid_recall_and_normal_specificity(tmp_path):
    y_test, p_test = _from_confusion([[9, 0, 1], [1, 8, 1], [0, 0, 5]])
    y_ext, p_ext = _from_confusion([[6, 4, 0], [7, 3, 0], [0, 0, 0]])
    ext = _table(y_ext, p_ext).assign(split_group=None)
    s = external.external_summary(_table(y_test, p_test), ext, n_boot=200)
    assert s.loc[("COVID-19 recall", "test"), "estimate"] == 0.9
    assert s.loc[("COVID-19 recall", "external"), "estimate"] == 0.6
    assert s.loc[("Normal specificity for COVID-19", "external"), ["k", "n"]].tolist() == [3, 10]
    assert s.loc[("Normal recall", "test"), "estimate"] == 0.8


def test_external_plot_draws_a_proportion_of_one_without_negative_error_bars():
    import matplotlib

    matplotlib.use("Agg")
    y, p = _from_confusion([[0, 300, 0], [0, 300, 0], [0, 0, 0]])  # everything called Normal (1 - Wilson high = 2e-16)
    s = external.external_summary(_table(y, p), _table(y, p).assign(split_group=None), n_boot=50)
    assert s.loc[("Normal recall", "external"), "estimate"] == 1.0
    fig = plots.plot_external({"all Normal": s})
    assert len(fig.axes) == 1


def test_figures_table_puts_runs_side_by_side_with_each_figures_interval():
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results" / "lesson08"
    reports = {name: ev.evaluate_predictions(predictions.load_predictions(results / name / "predictions_test.csv"),
                                             n_boot=200, seed=0) for name in ("control_64", "border_only")}
    table = ev.figures_table(reports)
    assert list(table.index) == ["control_64", "border_only"]
    assert list(table.columns) == ["accuracy", "macro recall", *(f"recall {c}" for c in CLASSES)]
    a = reports["border_only"].overall.loc["accuracy"]
    assert table.loc["border_only", "accuracy"] == metrics.interval_text(a["estimate"], a["ci_low"], a["ci_high"])
    r = reports["control_64"].per_class.loc[("Normal", "recall")]
    assert table.loc["control_64", "recall Normal"] == metrics.interval_text(r["estimate"], r["ci_low"], r["ci_high"])
    assert list(ev.figures_table(reports, ("accuracy", "precision")).columns) == [
        "accuracy", *(f"precision {c}" for c in CLASSES)]
