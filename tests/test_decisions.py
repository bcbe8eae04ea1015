"""cxr_utils.decisions: thresholds, costs and priors, checked by hand and on the committed predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_utils import decisions, predictions

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_a_threshold_trades_sensitivity_for_specificity_on_the_committed_predictions():
    df = predictions.load_predictions(RESULTS / "improved" / "predictions_test.csv")
    table = decisions.threshold_table(df, [0.0, 0.5, 1.01], n_boot=100)
    assert table.loc[0.0, "sensitivity"] == 1.0 and table.loc[0.0, "specificity"] == 0.0
    assert table.loc[1.01, "sensitivity"] == 0.0 and table.loc[1.01, "specificity"] == 1.0
    y = predictions.true_labels(df) == 0
    called = df["p_COVID-19"].to_numpy() >= 0.5
    assert table.loc[0.5, "sensitivity"] == pytest.approx(called[y].mean())
    assert table.loc[0.5, "sensitivity_low"] <= table.loc[0.5, "sensitivity"] <= table.loc[0.5, "sensitivity_high"]


def test_zero_one_costs_call_the_most_probable_class_and_a_dear_miss_calls_it_more():
    probs = np.array([[0.3, 0.6, 0.1], [0.2, 0.3, 0.5], [0.45, 0.55, 0.0]])
    flat = 1 - np.eye(3)
    np.testing.assert_array_equal(decisions.bayes_calls(probs, flat), probs.argmax(axis=1))
    dear = flat.copy()
    dear[0, 1:] = 10  # missing a COVID-19 costs ten times a false alarm
    assert decisions.bayes_calls(probs, dear).tolist() == [0, 0, 0]


def test_priors_adjust_by_bayes_rule_and_em_recovers_the_shares_of_a_label_shift():
    rng = np.random.default_rng(0)
    trained = np.array([0.5, 0.5])
    # a calibrated two-class model on a site where class 0 is 20 %: p(0|x) under 50/50 priors from a likelihood ratio
    y = rng.random(20_000) < 0.2
    score = np.where(y, rng.normal(1, 1, y.size), rng.normal(-1, 1, y.size))
    lr = np.exp(2 * score)  # N(1,1) vs N(-1,1)
    probs = np.stack([lr / (1 + lr), 1 / (1 + lr)], axis=1)
    shares, adjusted = decisions.em_priors(probs, trained)
    assert shares[0] == pytest.approx(0.2, abs=0.01)
    manual = decisions.adjust_priors(probs, trained, [0.2, 0.8])
    np.testing.assert_allclose(adjusted, manual, atol=0.01)
    assert adjusted.sum(axis=1) == pytest.approx(np.ones(len(probs)))


def test_class_weights_act_as_training_priors():
    np.testing.assert_allclose(decisions.training_priors([100, 300, 600]), [0.1, 0.3, 0.6])
    np.testing.assert_allclose(decisions.training_priors([100, 300, 600], {0: 6, 1: 2, 2: 1}), [1 / 3] * 3)
