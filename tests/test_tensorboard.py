"""A run's TensorBoard logs are readable by TensorBoard's own event reader, with loss and accuracy per epoch."""

from __future__ import annotations

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util


@pytest.fixture(scope="module")
def run(tiny_run):
    """The session's tiny run of the improved recipe (4 epochs; conftest.py)."""
    return tiny_run


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``folder``, as ``{tag: [(step, value), ...]}``.

    Keras 3 writes its scalars as tensor summaries (TensorBoard's newer format), which the accumulator
    lists under "tensors"; plain "scalars" are read too.
    """
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    for t in tags["tensors"]:
        out[t] = [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(t)]
    return out


def test_tensorboard_logs_hold_training_and_validation_loss_and_accuracy_per_epoch(run):
    history = pd.read_csv(run / "history.csv")
    train_scalars = _scalars(run / "tensorboard" / "train")
    val_scalars = _scalars(run / "tensorboard" / "validation")
    for scalars, prefix in ((train_scalars, ""), (val_scalars, "val_")):
        assert {"epoch_loss", "epoch_accuracy"} <= set(scalars), sorted(scalars)
        for tag, column in (("epoch_loss", "loss"), ("epoch_accuracy", "accuracy")):
            steps = [s for s, _ in scalars[tag]]
            values = [v for _, v in scalars[tag]]
            assert steps == list(range(len(history)))
            assert values == pytest.approx(history[prefix + column].tolist(), rel=1e-4)
