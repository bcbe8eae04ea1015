"""Cross-entropy, label smoothing and class weights against hand computation and against Keras."""

import math

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES
from cxr_utils.losses import (
    class_counts,
    class_weights,
    cross_entropy,
    keras_equivalent_smoothing,
    keras_loss,
    loss_share,
    paper_formula_3,
    smoothed_targets,
)

# The paper's Table 1 training counts (COVID-19, Normal, Pneumonia).
PAPER_TRAIN_COUNTS = [398, 1341, 3875]
P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0.05, 0.9, 0.05]])
Y = np.array([0, 1, 2, 2])


def test_keras_smoothing_puts_eps_over_n_on_every_class():
    t = smoothed_targets([0, 2], 0.12, scheme="keras")
    assert t == pytest.approx(np.array([[0.92, 0.04, 0.04], [0.04, 0.04, 0.92]]))


def test_paper_smoothing_puts_eps_over_n_minus_1_on_the_other_classes():
    t = smoothed_targets([1], 0.12, scheme="paper")
    assert t == pytest.approx(np.array([[0.06, 0.88, 0.06]]))


def test_smoothed_targets_accept_one_hot_rows_and_sum_to_one():
    onehot = np.eye(3)[Y]
    for scheme in ("keras", "paper"):
        t = smoothed_targets(onehot, 0.3, scheme=scheme)
        assert t == pytest.approx(smoothed_targets(Y, 0.3, scheme=scheme))
        assert t.sum(axis=1) == pytest.approx(np.ones(len(Y)))


def test_paper_eps_equals_keras_eps_times_n_over_n_minus_1():
    assert keras_equivalent_smoothing(0.12, "paper") == pytest.approx(0.18)
    assert smoothed_targets(Y, 0.12, "paper") == pytest.approx(smoothed_targets(Y, 0.18, "keras"))


def test_smoothed_targets_reject_bad_scheme_and_eps():
    with pytest.raises(ValueError, match="scheme"):
        smoothed_targets(Y, 0.1, scheme="fastai")
    with pytest.raises(ValueError, match="eps"):
        smoothed_targets(Y, 1.5)
    with pytest.raises(ValueError, match="class indices"):
        smoothed_targets([3], 0.1)


def test_cross_entropy_matches_hand_computation():
    expected = [-math.log(0.7), -math.log(0.6), -math.log(0.5), -math.log(0.05)]
    assert cross_entropy(Y, P) == pytest.approx(expected)
    t = smoothed_targets([0], 0.12)
    by_hand = -(0.92 * math.log(0.7) + 0.04 * math.log(0.2) + 0.04 * math.log(0.1))
    assert cross_entropy(t, P[:1]) == pytest.approx([by_hand])


@pytest.mark.parametrize("eps", [0.0, 0.12, 0.3])
def test_cross_entropy_with_keras_targets_equals_keras_loss(eps):
    onehot = np.eye(3)[Y]
    ours = cross_entropy(smoothed_targets(onehot, eps), P).mean()
    theirs = float(keras.losses.CategoricalCrossentropy(label_smoothing=eps)(onehot, P))
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_keras_loss_for_paper_scheme_trains_on_formula_2_targets():
    onehot = np.eye(3)[Y]
    ours = cross_entropy(smoothed_targets(Y, 0.12, "paper"), P).mean()
    assert float(keras_loss(0.12, "paper")(onehot, P)) == pytest.approx(ours, rel=1e-5)
    assert float(keras_loss(0.12, "keras")(onehot, P)) != pytest.approx(ours, rel=1e-3)


def test_cross_entropy_clips_zero_probabilities_like_keras():
    p = np.array([[1.0, 0.0, 0.0]])
    assert np.isfinite(cross_entropy([1], p)).all()
    assert cross_entropy([1], p)[0] == pytest.approx(-math.log(keras.config.epsilon()), rel=1e-6)


def test_paper_formula_3_matches_hand_computation():
    eps = 0.12
    by_hand = -math.log(0.88 * 0.7) - math.log(0.06 * 0.2) - math.log(0.06 * 0.1)
    assert paper_formula_3([0], P[:1], eps) == pytest.approx([by_hand])


def test_paper_formula_3_is_smallest_at_the_uniform_prediction_whatever_the_label():
    # A proper loss is smallest when the prediction puts its mass on the label; formula (3) is not.
    grid = np.linspace(0.02, 0.96, 48)
    preds = np.array([[a, b, 1 - a - b] for a in grid for b in grid if 1 - a - b > 0.01])
    for label in range(3):
        values = paper_formula_3(np.full(len(preds), label), preds, 0.12)
        best = preds[values.argmin()]
        assert best == pytest.approx(np.full(3, 1 / 3), abs=0.03)
        ce = cross_entropy(smoothed_targets(np.full(len(preds), label), 0.12, "paper"), preds)
        assert preds[ce.argmin()].argmax() == label


def test_paper_formula_3_differs_from_the_cross_entropy_with_its_own_targets():
    f3 = paper_formula_3(Y, P, 0.12)
    ce = cross_entropy(smoothed_targets(Y, 0.12, "paper"), P)
    assert not np.allclose(f3, ce, rtol=0.05)


def test_paper_class_weights_are_the_scripts():
    assert class_weights(PAPER_TRAIN_COUNTS, "paper") == {0: 10.0, 1: 3.0, 2: 1.0}


def test_balanced_class_weights_are_n_over_classes_times_count():
    w = class_weights(PAPER_TRAIN_COUNTS, "balanced")
    n = sum(PAPER_TRAIN_COUNTS)
    assert w == pytest.approx({i: n / (3 * c) for i, c in enumerate(PAPER_TRAIN_COUNTS)})


def test_effective_number_weights_follow_cui_and_sum_to_n_classes():
    beta = 0.999
    raw = [(1 - beta) / (1 - beta**c) for c in PAPER_TRAIN_COUNTS]
    expected = {i: r / sum(raw) * 3 for i, r in enumerate(raw)}
    w = class_weights(PAPER_TRAIN_COUNTS, "effective", beta=beta)
    assert w == pytest.approx(expected)
    assert sum(w.values()) == pytest.approx(3.0)
    assert w[0] > w[1] > w[2]


def test_class_weights_from_a_manifest_count_only_the_training_split():
    manifest = pd.DataFrame({
        "label": ["COVID-19"] * 2 + ["Normal"] * 4 + ["Pneumonia"] * 6 + ["COVID-19"] * 5,
        "split": ["train"] * 12 + ["test"] * 5,
    })
    assert class_counts(manifest).tolist() == [2, 4, 6]
    assert class_weights(manifest, "balanced") == pytest.approx({0: 2.0, 1: 1.0, 2: 12 / 18})
    assert class_counts({"Normal": 4, "COVID-19": 2, "Pneumonia": 6}).tolist() == [2, 4, 6]


def test_class_counts_name_the_problem():
    with pytest.raises(ValueError, match="at least one image"):
        class_counts([0, 5, 5])
    with pytest.raises(ValueError, match="not among"):
        class_counts(pd.DataFrame({"label": ["Covid"], "split": ["train"]}))


def test_balanced_weights_give_every_class_an_equal_share_of_the_loss():
    share = loss_share(class_weights(PAPER_TRAIN_COUNTS, "balanced"), PAPER_TRAIN_COUNTS)
    assert list(share.values()) == pytest.approx([1 / 3] * 3)


def test_loss_share_without_weights_is_the_class_frequency():
    share = loss_share(class_weights(PAPER_TRAIN_COUNTS, "none"), PAPER_TRAIN_COUNTS)
    n = sum(PAPER_TRAIN_COUNTS)
    assert list(share.values()) == pytest.approx([c / n for c in PAPER_TRAIN_COUNTS])
    assert len(share) == len(CLASSES)


def test_class_weights_from_the_curated_manifest_match_scikit_learn_on_its_training_labels(curated_data_dir):
    from sklearn.utils.class_weight import compute_class_weight

    from cxr_utils import label_indices
    from cxr_utils.data import load_manifest

    manifest = load_manifest()
    train = manifest[manifest["split"] == "train"]
    y = label_indices(train["label"])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert class_counts(manifest).sum() == len(train)
    assert class_weights(manifest, "balanced") == pytest.approx(dict(enumerate(expected)))
    assert sum(loss_share(class_weights(manifest, "paper"), manifest).values()) == pytest.approx(1.0)
