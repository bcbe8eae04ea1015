"""Learning-rate schedules at their boundaries, their serialisation, and the range test."""

import keras
import numpy as np
import pandas as pd
import pytest

from cxr_utils.images import read_image
from cxr_utils.schedules import (
    EpochStepDecay,
    WarmupCosineDecay,
    lr_at_steps,
    lr_range_test,
    paper_three_stage,
    schedule_table,
    script_schedule,
    suggest_lr,
)

SPE = 88  # the script's steps per epoch (5614 images / batch 32)


def lr(schedule, step):
    return float(lr_at_steps(schedule, [step])[0])


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 4e-4), (3 * SPE - 1, 4e-4), (3 * SPE, 2e-4), (6 * SPE - 1, 2e-4), (6 * SPE, 1e-4), (12 * SPE - 1, 1e-4),
     (100 * SPE, 1e-4)],
)
def test_script_schedule_changes_rate_exactly_at_epochs_3_and_6(step, expected):
    assert lr(script_schedule(SPE), step) == pytest.approx(expected, rel=1e-6)


def test_paper_three_stage_goes_small_large_small():
    s = paper_three_stage(SPE)
    rates = [lr(s, e * SPE) for e in (0, 2, 3, 5, 6, 11)]
    assert rates == pytest.approx([1e-4, 1e-4, 4e-4, 4e-4, 1e-4, 1e-4], rel=1e-6)
    assert lr(s, 3 * SPE - 1) == pytest.approx(1e-4, rel=1e-6)


def test_epoch_step_decay_rejects_mismatched_rates_and_bad_steps():
    with pytest.raises(ValueError, match="one more rate"):
        EpochStepDecay(10, boundaries=(3, 6), rates=(1e-3, 1e-4))
    with pytest.raises(ValueError, match="steps_per_epoch"):
        EpochStepDecay(0)
    with pytest.raises(ValueError, match="increasing"):
        EpochStepDecay(10, boundaries=(6, 3), rates=(1, 2, 3))


def test_warmup_cosine_starts_low_peaks_at_end_of_warmup_and_ends_at_final_fraction():
    s = WarmupCosineDecay(1e-3, steps_per_epoch=10, epochs=12, warmup_epochs=2, initial_lr=1e-5, final_fraction=0.01)
    assert lr(s, 0) == pytest.approx(1e-5, rel=1e-5)
    assert lr(s, 10) == pytest.approx((1e-5 + 1e-3) / 2, rel=1e-5)  # half-way through a linear warm-up
    assert lr(s, 19) < lr(s, 20)
    assert lr(s, 20) == pytest.approx(1e-3, rel=1e-5)
    # half-way through the cosine: (1 + cos(pi/2)) / 2 = 0.5 of the way from 1e-3 to 1e-5
    assert lr(s, 70) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-4)
    assert lr(s, 120) == pytest.approx(1e-5, rel=1e-4)
    assert lr(s, 500) == pytest.approx(1e-5, rel=1e-4)
    values = lr_at_steps(s, range(20, 121))
    assert (np.diff(values) <= 1e-12).all()


def test_warmup_cosine_refuses_warmup_longer_than_training():
    with pytest.raises(ValueError, match="warm-up"):
        WarmupCosineDecay(1e-3, steps_per_epoch=10, epochs=2, warmup_epochs=2)


def test_schedule_table_lists_first_and_last_batch_of_each_epoch():
    table = schedule_table({"script": script_schedule(5)}, steps_per_epoch=5, epochs=8)
    assert list(table.columns) == ["script first", "script last"]
    assert table.loc[2, "script last"] == pytest.approx(4e-4, rel=1e-6)
    assert table.loc[3, "script first"] == pytest.approx(2e-4, rel=1e-6)
    assert table.loc[7, "script first"] == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize(
    "schedule",
    [script_schedule(SPE), paper_three_stage(SPE), WarmupCosineDecay(3e-4, SPE, 12, 1.5, 1e-6, 0.05)],
    ids=["script", "paper", "cosine"],
)
def test_schedules_round_trip_through_get_config_and_keras_serialize(schedule):
    again = type(schedule).from_config(schedule.get_config())
    steps = [0, SPE - 1, SPE, 3 * SPE, 7 * SPE + 5, 12 * SPE]
    assert lr_at_steps(again, steps) == pytest.approx(lr_at_steps(schedule, steps))
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()


def test_a_saved_model_reloads_with_its_optimizer_schedule_and_step(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(keras.optimizers.Adam(script_schedule(5)), loss="categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(15)  # epoch 3 with 5 steps per epoch
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    schedule = loaded.optimizer._learning_rate
    assert isinstance(schedule, EpochStepDecay)
    assert schedule.get_config() == script_schedule(5).get_config()
    assert float(loaded.optimizer.learning_rate) == pytest.approx(2e-4, rel=1e-6)


# ----------------------------------------------------------------------------- range test on real images


@pytest.fixture(scope="module")
def small_real_batches(mirror):
    """32 real Kaggle training radiographs (16 Normal, 16 Pneumonia) at 16x16, in 4 batches of 8."""
    root = mirror / "chest_xray" / "train"
    files = [(p, 1) for p in sorted((root / "NORMAL").iterdir())[:16]]
    files += [(p, 2) for p in sorted((root / "PNEUMONIA").iterdir())[:16]]
    order = np.random.default_rng(0).permutation(len(files))
    x = np.stack([read_image(files[i][0], channels=1, size=(16, 16)) for i in order]).astype("float32") / 255.0
    y = np.eye(3, dtype="float32")[[files[i][1] for i in order]]
    return [(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)]


def _tiny_model():
    return keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])


def test_range_test_sweeps_rates_exponentially_and_smooths_with_bias_correction(small_real_batches):
    curve = lr_range_test(_tiny_model, small_real_batches, min_lr=1e-5, max_lr=1e-3, steps=10)
    assert len(curve) == 10 and not curve.attrs["stopped_early"]
    assert curve["lr"].iloc[0] == pytest.approx(1e-5) and curve["lr"].iloc[-1] == pytest.approx(1e-3)
    assert np.diff(np.log(curve["lr"])) == pytest.approx(np.full(9, np.log(100) / 9))
    assert curve["smoothed_loss"].iloc[0] == pytest.approx(curve["loss"].iloc[0])
    beta = 0.98
    expected = (beta * (1 - beta) * curve["loss"].iloc[0] + (1 - beta) * curve["loss"].iloc[1]) / (1 - beta**2)
    assert curve["smoothed_loss"].iloc[1] == pytest.approx(expected)


def test_range_test_uses_the_optimizer_asked_for_and_adds_an_unlagged_median(small_real_batches):
    made = []

    def adamw(lr):
        made.append(keras.optimizers.AdamW(lr, weight_decay=1e-2))
        return made[-1]

    curve = lr_range_test(_tiny_model, small_real_batches, min_lr=1e-5, max_lr=1e-3, steps=7, optimizer=adamw,
                          median_window=3)
    assert len(made) == 1 and int(made[0].iterations.numpy()) == 7  # this optimizer ran every batch
    loss = curve["loss"].to_numpy()
    assert curve["median_loss"].iloc[3] == pytest.approx(np.median(loss[2:5]))  # centred: no lag
    assert curve["median_loss"].iloc[0] == pytest.approx(np.median(loss[0:2]))


def test_suggest_lr_reads_the_column_asked_for():
    lrs = np.logspace(-6, 0, 61)
    smoothed = (np.log10(lrs) + 2.0) ** 2  # lowest at 1e-2
    median = (np.log10(lrs) + 3.0) ** 2  # lowest at 1e-3
    curve = pd.DataFrame({"lr": lrs, "smoothed_loss": smoothed, "median_loss": median})
    assert suggest_lr(curve)["min_loss"] == pytest.approx(1e-2)
    assert suggest_lr(curve, column="median_loss")["min_loss"] == pytest.approx(1e-3)


def test_range_test_stops_when_the_loss_diverges(small_real_batches):
    curve = lr_range_test(_tiny_model, small_real_batches, min_lr=1e-4, max_lr=1e4, steps=60, diverge_factor=2.0)
    assert curve.attrs["stopped_early"]
    assert len(curve) < 60
    last = curve["smoothed_loss"].iloc[-1]
    assert not np.isfinite(curve["loss"].iloc[-1]) or last > 2.0 * curve["smoothed_loss"].iloc[:-1].min()


def test_suggest_lr_reads_the_minimum_and_the_steepest_fall():
    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    smoothed = 1.1 - 0.5 * np.tanh(2 * (x + 4)) + np.where(x > -2, (x + 2) ** 2, 0.0)
    curve = pd.DataFrame({"step": range(61), "lr": lrs, "loss": smoothed, "smoothed_loss": smoothed})
    s = suggest_lr(curve)
    assert s["min_loss"] == pytest.approx(lrs[smoothed.argmin()])
    assert s["min_loss_over_10"] == pytest.approx(s["min_loss"] / 10)
    assert s["steepest"] == pytest.approx(1e-4, rel=0.3)


def test_suggest_lr_is_not_fooled_by_one_noisy_batch():
    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    smoothed = 1.1 - 0.5 * np.tanh(2 * (x + 4)) + np.where(x > -2, (x + 2) ** 2, 0.0)
    smoothed[np.argmin(np.abs(x + 4.5))] -= 0.2  # one lucky batch at 3e-5
    curve = pd.DataFrame({"step": range(61), "lr": lrs, "loss": smoothed, "smoothed_loss": smoothed})
    assert suggest_lr(curve)["steepest"] == pytest.approx(1e-4, rel=0.3)
    assert suggest_lr(curve, window_decades=0.0)["steepest"] != pytest.approx(1e-4, rel=0.3)


def test_suggest_lr_keeps_three_rows_of_a_very_short_curve_and_drops_the_diverged_one():
    curve = pd.DataFrame({"step": range(5), "lr": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                          "loss": [1.1, 1.0, 0.8, 0.9, 9.0], "smoothed_loss": [1.1, 1.0, 0.8, 0.9, 9.0]})
    curve.attrs["stopped_early"] = True
    s = suggest_lr(curve)
    assert s["min_loss"] == pytest.approx(1e-3)
    curve.attrs["stopped_early"] = False
    assert suggest_lr(curve.iloc[:4])["min_loss"] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="too few rows"):
        suggest_lr(curve.iloc[:2])

