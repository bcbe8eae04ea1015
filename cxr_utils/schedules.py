"""Learning-rate schedules (per batch, serialisable) and a learning-rate range test.

Three schedules, each a ``keras.optimizers.schedules.LearningRateSchedule`` that the optimizer calls
with its step counter (0 for the first batch) and that is built from ``steps_per_epoch``, so epoch
``e`` covers steps ``e * steps_per_epoch`` to ``(e + 1) * steps_per_epoch - 1``:

- :class:`EpochStepDecay` with its defaults is the **script's** schedule: 4e-4 for epochs 0-2,
  2e-4 for epochs 3-5, 1e-4 afterwards (a step decay; there is no warm-up in the code).
- :func:`paper_three_stage` is the schedule the **paper's text** describes (section 3.5): small, then
  the larger preset rate, then small again. The text gives no numbers; we keep the script's
  boundaries and rates and reorder them: 1e-4 for epochs 0-2, 4e-4 for epochs 3-5, 1e-4 afterwards.
- :class:`WarmupCosineDecay`: linear warm-up to a peak, then cosine decay to ``final_fraction`` of it
  (built on ``keras.optimizers.schedules.CosineDecay``).

All are registered with ``keras.saving.register_keras_serializable(package="cxr_utils")``, so a model
saved with its optimizer reloads with ``keras.models.load_model`` once ``cxr_utils.schedules`` is imported.

:func:`lr_range_test` is Smith's (2017) test: train for a few hundred steps while the rate grows
exponentially, record the (smoothed) loss, stop when it diverges; :func:`suggest_lr` reads a peak
rate off the curve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

SCRIPT_BOUNDARIES: tuple[int, ...] = (3, 6)
"""Epochs at which the script's rate drops (epoch 3 and epoch 6, counting from 0)."""
SCRIPT_RATES: tuple[float, ...] = (4e-4, 2e-4, 1e-4)
"""The script's rates: 4e-4 (epochs 0-2), 2e-4 (epochs 3-5), 1e-4 (epoch 6 on)."""


def _check_steps_per_epoch(steps_per_epoch: int) -> int:
    if int(steps_per_epoch) != steps_per_epoch or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive int (batches per epoch), got {steps_per_epoch!r}")
    return int(steps_per_epoch)


@keras.saving.register_keras_serializable(package="cxr_utils")
class EpochStepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-constant learning rate that changes at epoch boundaries, evaluated per batch.

    ``rates[i]`` holds for epochs ``boundaries[i-1] <= epoch < boundaries[i]``
    (``epoch = step // steps_per_epoch``). The defaults are the script's schedule.

    Args:
        steps_per_epoch: batches per epoch (``ceil(n_train / batch_size)``).
        boundaries: increasing epochs at which the rate changes.
        rates: one more rate than boundaries.
    """

    def __init__(self, steps_per_epoch: int, boundaries: Sequence[int] = SCRIPT_BOUNDARIES,
                 rates: Sequence[float] = SCRIPT_RATES, name: str = "EpochStepDecay"):
        super().__init__()
        self.steps_per_epoch = _check_steps_per_epoch(steps_per_epoch)
        self.boundaries = [int(b) for b in boundaries]
        self.rates = [float(r) for r in rates]
        self.name = name
        if len(self.rates) != len(self.boundaries) + 1:
            raise ValueError(f"need one more rate than boundaries, got {len(self.rates)} rates "
                             f"and {len(self.boundaries)} boundaries")
        if list(self.boundaries) != sorted(set(self.boundaries)) or any(b < 1 for b in self.boundaries):
            raise ValueError(f"boundaries must be increasing epochs >= 1, got {self.boundaries}")

    def __call__(self, step):
        step = ops.cast(step, "int64")
        epoch = ops.floor_divide(step, self.steps_per_epoch)
        lr = ops.convert_to_tensor(self.rates[-1], dtype="float32")
        # Walk the boundaries from the last one down, so the earliest one that applies wins.
        for boundary, rate in zip(reversed(self.boundaries), reversed(self.rates[:-1]), strict=True):
            lr = ops.where(epoch < boundary, ops.convert_to_tensor(rate, dtype="float32"), lr)
        return lr

    def get_config(self) -> dict:
        return {"steps_per_epoch": self.steps_per_epoch, "boundaries": list(self.boundaries),
                "rates": list(self.rates), "name": self.name}


def script_schedule(steps_per_epoch: int) -> EpochStepDecay:
    """Return the script's schedule: 4e-4 (epochs 0-2), 2e-4 (epochs 3-5), 1e-4 (epoch 6 on)."""
    return EpochStepDecay(steps_per_epoch, SCRIPT_BOUNDARIES, SCRIPT_RATES, name="script")


def paper_three_stage(steps_per_epoch: int, low: float = 1e-4, peak: float = 4e-4,
                      boundaries: Sequence[int] = SCRIPT_BOUNDARIES) -> EpochStepDecay:
    """Return the three-stage schedule the paper's text describes: ``low``, then ``peak``, then ``low``.

    The paper (section 3.5) says: "a smaller learning rate is used in the initial stage, and a larger
    preset learning rate is used in the intermediate stage ... at the later stage ... a smaller
    learning rate". It gives no values or epochs; by default we reuse the script's epochs (3, 6) and
    its largest and smallest rates. The script itself does not do this: it starts at its largest rate.
    """
    return EpochStepDecay(steps_per_epoch, boundaries, (low, peak, low), name="paper_three_stage")


@keras.saving.register_keras_serializable(package="cxr_utils")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ``initial_lr`` to ``peak_lr``, then cosine decay to ``final_fraction * peak_lr``.

    Steps are batches. The rate is ``initial_lr`` at step 0, ``peak_lr`` at step
    ``warmup_epochs * steps_per_epoch``, and ``final_fraction * peak_lr`` at step
    ``epochs * steps_per_epoch`` and after. Delegates to ``keras.optimizers.schedules.CosineDecay``.

    Args:
        peak_lr: the rate reached at the end of warm-up (e.g. from :func:`lr_range_test`).
        steps_per_epoch: batches per epoch.
        epochs: total training epochs (warm-up included).
        warmup_epochs: epochs of linear warm-up (may be fractional).
        initial_lr: rate at step 0.
        final_fraction: the last rate as a fraction of ``peak_lr``.
    """

    def __init__(self, peak_lr: float, steps_per_epoch: int, epochs: int, warmup_epochs: float = 1.0,
                 initial_lr: float = 0.0, final_fraction: float = 0.0, name: str = "WarmupCosineDecay"):
        super().__init__()
        self.peak_lr = float(peak_lr)
        self.steps_per_epoch = _check_steps_per_epoch(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.initial_lr = float(initial_lr)
        self.final_fraction = float(final_fraction)
        self.name = name
        self.warmup_steps = int(round(self.warmup_epochs * self.steps_per_epoch))
        self.total_steps = self.epochs * self.steps_per_epoch
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"warm-up ({self.warmup_epochs} epochs) must be shorter than training "
                             f"({self.epochs} epochs)")
        self._cosine = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=self.initial_lr if self.warmup_steps else self.peak_lr,
            decay_steps=self.total_steps - self.warmup_steps,
            alpha=self.final_fraction,
            warmup_target=self.peak_lr if self.warmup_steps else None,
            warmup_steps=self.warmup_steps,
            name=name,
        )

    def __call__(self, step):
        return self._cosine(step)

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "steps_per_epoch": self.steps_per_epoch, "epochs": self.epochs,
                "warmup_epochs": self.warmup_epochs, "initial_lr": self.initial_lr,
                "final_fraction": self.final_fraction, "name": self.name}


def lr_at_steps(schedule: Callable, steps: Sequence[int] | np.ndarray) -> np.ndarray:
    """Return the learning rate of ``schedule`` at each of ``steps`` (float64 array)."""
    return np.array([float(ops.convert_to_numpy(schedule(int(s)))) for s in steps], dtype=np.float64)


def schedule_table(schedules: dict[str, Callable], steps_per_epoch: int, epochs: int) -> pd.DataFrame:
    """Return the rate of each schedule at the first and the last batch of each epoch.

    Rows are epochs 0..epochs-1; columns ``<name> first`` and ``<name> last`` for each schedule.
    """
    first = np.arange(epochs) * steps_per_epoch
    last = first + steps_per_epoch - 1
    table = pd.DataFrame({"epoch": np.arange(epochs)}).set_index("epoch")
    for name, sched in schedules.items():
        table[f"{name} first"] = lr_at_steps(sched, first)
        table[f"{name} last"] = lr_at_steps(sched, last)
    return table


# ----------------------------------------------------------------------------- range test


def lr_range_test(
    model_fn: Callable[[], keras.Model],
    dataset,
    min_lr: float = 1e-6,
    max_lr: float = 1e-1,
    steps: int = 100,
    *,
    loss: keras.losses.Loss | str = "categorical_crossentropy",
    class_weight: dict[int, float] | None = None,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    seed: int = 0,
    optimizer: Callable[[float], keras.optimizers.Optimizer] | None = None,
    median_window: int = 9,
) -> pd.DataFrame:
    """Run a learning-rate range test and return its curve.

    The idea is Smith's (2017: raise the rate during a short training and watch the loss); this is the
    exponential form with a smoothed loss that fastai's ``lr_find`` made common. A fresh model from
    ``model_fn()`` is trained for up to ``steps`` batches from ``dataset`` (repeated if it runs out)
    while the rate grows exponentially from ``min_lr`` to ``max_lr``:
    ``lr_i = min_lr * (max_lr / min_lr) ** (i / (steps - 1))``. Each batch's loss is recorded
    (computed before that batch's update) and smoothed with a bias-corrected exponential moving
    average (``beta``). The test stops early once the smoothed loss exceeds ``diverge_factor`` times
    its lowest value, or the loss is not finite.

    The moving average lags: with ``beta = 0.98`` it weighs about the last 50 batches, which in a sweep of
    100 batches over six decades is three decades of rate, so its minimum sits to the right of the loss's.
    The curve therefore also holds ``median_loss``, a centred running median of ``median_window`` batches,
    which is noisy but does not lag.

    Args:
        model_fn: returns a new, uncompiled model (called once; the function compiles it).
        dataset: a ``tf.data.Dataset`` (or any iterable) of ``(images, one-hot labels)`` batches.
        min_lr, max_lr: the ends of the sweep.
        steps: batches in the full sweep.
        loss: the training loss (e.g. ``cxr_utils.losses.keras_loss(0.12)``).
        class_weight: passed to ``train_on_batch``, as ``fit`` would.
        beta: smoothing of the loss curve (0.98 as in fastai).
        diverge_factor: stop when the smoothed loss is this many times its minimum.
        seed: seeds Keras' random generators before the model is built.
        optimizer: builds the optimizer from the starting rate (default Adam), e.g.
            ``lambda lr: keras.optimizers.AdamW(lr, weight_decay=1e-4)`` to test a recipe that uses AdamW.
        median_window: batches in the centred running median ``median_loss``.

    Returns:
        DataFrame with columns ``step``, ``lr``, ``loss``, ``smoothed_loss``, ``median_loss`` (one row per
        batch run); ``df.attrs["stopped_early"]`` says whether divergence ended the sweep.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    keras.utils.set_random_seed(seed)
    model = model_fn()
    from cxr_utils.models import build_training_state

    model.compile(optimizer=(optimizer or (lambda lr: keras.optimizers.Adam(learning_rate=lr)))(min_lr), loss=loss)
    build_training_state(model)
    rates = min_lr * (max_lr / min_lr) ** (np.arange(steps) / (steps - 1))

    def batches():
        while True:
            empty = True
            for batch in dataset:
                empty = False
                yield batch
            if empty:
                raise ValueError("the dataset given to lr_range_test yielded no batches")

    rows, avg, best, stopped = [], 0.0, math.inf, False
    it = batches()
    for i, lr in enumerate(rates):
        x, y = next(it)
        model.optimizer.learning_rate = float(lr)
        out = model.train_on_batch(x, y, class_weight=class_weight, return_dict=True)
        value = float(out["loss"])
        avg = beta * avg + (1.0 - beta) * value
        smoothed = avg / (1.0 - beta ** (i + 1))
        rows.append({"step": i, "lr": float(lr), "loss": value, "smoothed_loss": smoothed})
        if not math.isfinite(value) or (i > 0 and smoothed > diverge_factor * best):
            stopped = True
            break
        best = min(best, smoothed)
    df = pd.DataFrame(rows)
    df["median_loss"] = df["loss"].rolling(median_window, center=True, min_periods=1).median()
    df.attrs["stopped_early"] = stopped
    return df


def suggest_lr(curve: pd.DataFrame, skip_start: int = 10, window_decades: float = 1.0,
               column: str = "smoothed_loss") -> dict[str, float]:
    """Read candidate peak rates off a range-test curve (the output of :func:`lr_range_test`).

    Args:
        curve: the range test's DataFrame (``lr``, ``smoothed_loss``; ``attrs["stopped_early"]``).
        column: the loss curve to read: ``smoothed_loss`` (fastai's choice; lags) or ``median_loss``.
        skip_start: rows ignored at the start, where the moving average is still noisy (fewer when
            the curve is very short: at least 3 rows are kept). The row that diverged is ignored too.
        window_decades: the steepest fall is measured as the change of the smoothed loss across this
            many decades of rate (a centred difference), so one noisy batch cannot make it.

    Returns:
        ``min_loss``: the rate where the smoothed loss is lowest (already too high to train at: the
        loss is about to rise); ``min_loss_over_10``: a tenth of it, the usual pick;
        ``steepest``: the rate, below ``min_loss``, where the smoothed loss falls fastest per decade.
    """
    c = curve.iloc[:-1] if curve.attrs.get("stopped_early") else curve
    if len(c) < 3:
        raise ValueError(f"the range-test curve has too few rows ({len(curve)}); run more steps or a wider sweep")
    c = c.iloc[min(skip_start, len(c) - 3):]  # a very short curve keeps at least 3 rows
    loss = c[column].to_numpy()
    log_lr = np.log10(c["lr"].to_numpy())
    i_min = int(loss.argmin())
    lr_min = float(c["lr"].iloc[i_min])
    per_decade = (len(log_lr) - 1) / max(log_lr[-1] - log_lr[0], 1e-12)
    half = max(1, int(round(window_decades * per_decade / 2)))
    lo = np.clip(np.arange(len(loss)) - half, 0, len(loss) - 1)
    hi = np.clip(np.arange(len(loss)) + half, 0, len(loss) - 1)
    slope = (loss[hi] - loss[lo]) / np.maximum(log_lr[hi] - log_lr[lo], 1e-12)
    steepest = float(c["lr"].iloc[int(slope[: max(i_min, 1)].argmin())])
    return {"min_loss": lr_min, "min_loss_over_10": lr_min / 10.0, "steepest": steepest}
