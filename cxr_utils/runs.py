"""What a run folder is: its files, whether it is complete, its config, reloading and exporting it.

:func:`cxr_utils.train.train_recipe` writes a run folder; everything that *reads* one (evaluation,
the external set, the prediction command, the lessons) reads it through this module, so evaluation
never imports training. A run folder holds:

==========================  ====================================================================
``config.json``             the resolved recipe, options and data fingerprint (written first)
``environment.json``        versions, platform, CPU, threads, precision (no host name)
``history.csv``             one row per finished epoch: losses, accuracies, learning rate, seconds
``tensorboard/``            TensorBoard event files
``best.keras``              the model of the epoch chosen on **validation** (the recipe's monitor)
``predictions_val.csv``     the best model's probabilities for every validation image
``predictions_test.csv``    the same on test, computed once, after training
``metrics.json``            written **last** and atomically: its presence marks the run complete
``backup/``                 the state to resume from while training (removed when complete)
==========================  ====================================================================

A folder is *complete* when ``metrics.json`` says so and ``best.keras`` is there
(:func:`is_complete`); anything less was interrupted and can be resumed by training it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_utils import paths

CONFIG_FILE = "config.json"
ENVIRONMENT_FILE = "environment.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
BEST_MODEL_FILE = "best.keras"
BACKUP_DIR = "backup"

RESULT_FILES: tuple[str, ...] = (METRICS_FILE, HISTORY_FILE, CONFIG_FILE, ENVIRONMENT_FILE,
                                 "predictions_test.csv", "predictions_val.csv")
"""The small files of a run that :func:`export_results` copies (never the weights)."""

OPTIONAL_RESULT_FILES: tuple[str, ...] = ("predictions_external.csv",)
"""Files a run folder may gain after training (:func:`cxr_utils.external.predict_external`); exported when present."""


class RunFolderError(FileNotFoundError):
    """A folder is missing, incomplete, or not a run folder of this course; the message says which and what to do."""


def relative(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the runs folder's parent or the data folder, for messages (no absolute paths in lessons)."""
    for base in (paths.runs_dir().parent, paths.data_dir()):
        with contextlib.suppress(ValueError, OSError):
            return Path(path).resolve().relative_to(base.resolve()).as_posix()
    return Path(path).name


def is_complete(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds a readable ``metrics.json`` marked complete and its ``best.keras``.

    ``metrics.json`` is written last and atomically, so a folder interrupted at any point before it
    (while training, or while predicting) is never reported complete.
    """
    path = Path(path)
    try:
        metrics = json.loads((path / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return False
    return bool(metrics.get("complete")) and (path / BEST_MODEL_FILE).is_file()


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the ``config.json`` of a run folder.

    Raises:
        RunFolderError: the folder does not exist or holds no readable ``config.json``.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunFolderError(f"run folder '{path}' does not exist; train it first (lesson 06, cxr_utils.train)")
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise RunFolderError(f"'{path}' is not a run folder of this course: it has no {CONFIG_FILE}") from None
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"'{path}/{CONFIG_FILE}' cannot be read ({exc}); train the run again") from None
    if not isinstance(config, dict) or "recipe" not in config:
        raise RunFolderError(f"'{path}/{CONFIG_FILE}' is not a run configuration of this course (no 'recipe')")
    return config


def monitor_of(config: dict[str, Any]) -> str:
    """The validation quantity that chose ``best.keras`` in ``config`` (the first word of its ``selection``)."""
    return config["selection"].split()[0]


def preprocessing(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(image_size, channels)`` the run was trained with (its inputs: :mod:`cxr_utils.preprocess`)."""
    config = read_config(path)
    return int(config["image_size"]), int(config.get("channels", 3))


def find_run(recipe: str, runs_root: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the complete run folder of ``recipe``: ``<runs>/<recipe>`` itself, else the newest ``<recipe>-*``.

    Complete means :func:`is_complete` and a ``config.json``. Returns None when there is no such folder.
    """
    root = Path(runs_root) if runs_root else paths.runs_dir()

    def usable(run: Path) -> bool:
        return is_complete(run) and (run / CONFIG_FILE).is_file()

    if usable(root / recipe):
        return root / recipe
    found = [p for p in root.glob(f"{recipe}-*") if usable(p)] if root.is_dir() else []
    return max(found, key=lambda p: (p / METRICS_FILE).stat().st_mtime) if found else None


def require_complete(path: str | os.PathLike[str]) -> Path:
    """Return ``path`` if it is a complete run folder of this course.

    Raises:
        RunFolderError: missing, not a course run (no readable ``config.json``), or incomplete.
    """
    path = Path(path)
    read_config(path)
    if not is_complete(path):
        raise RunFolderError(f"'{relative(path)}' is not a complete run (no metrics.json marked complete, or no "
                             f"{BEST_MODEL_FILE}); call train_recipe() to train or resume it")
    return path


def load_model(path: str | os.PathLike[str]):
    """Load ``best.keras`` of a run folder (uncompiled), registering the course's own layers first."""
    import keras

    from cxr_utils import models, schedules  # noqa: F401  (register PerImageStandardization, the schedules)

    return keras.models.load_model(Path(path) / BEST_MODEL_FILE, compile=False)


def load_run(path: str | os.PathLike[str]):
    """Reload a complete run folder.

    Returns:
        ``(model, metrics, history)``: the best-on-validation ``keras.Model`` (uncompiled), the dict of
        ``metrics.json`` and ``history.csv`` as a DataFrame.

    Raises:
        RunFolderError: the folder is not a complete run (train, or resume, it with ``train_recipe``).
    """
    path = require_complete(path)
    metrics = json.loads((path / METRICS_FILE).read_text())
    return load_model(path), metrics, pd.read_csv(path / HISTORY_FILE)


def export_results(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the small files of a complete run (:data:`RESULT_FILES`, never weights) into ``dest``.

    Files of :data:`OPTIONAL_RESULT_FILES` are copied too when the run has them. Returns the copied files.

    Raises:
        RunFolderError: the run is not complete.
    """
    from cxr_utils import atomic

    run_dir, dest = require_complete(run_dir), Path(dest)
    out = []
    for name in RESULT_FILES + tuple(n for n in OPTIONAL_RESULT_FILES if (run_dir / n).is_file()):
        with atomic.replacing(dest / name) as tmp:
            shutil.copyfile(run_dir / name, tmp)
        out.append(dest / name)
    return out


def best_index(values: Sequence[float] | np.ndarray, monitor: str) -> int:
    """Index of the best value of ``monitor`` (lowest for a loss, highest otherwise; the first on ties)."""
    values = np.asarray(values, dtype=np.float64)
    return int(values.argmin() if monitor.endswith("loss") else values.argmax())


def epoch_line(row: dict, epochs: int) -> str:
    """One compact line per epoch of ``history.csv``; ``epochs`` is the run's total. For example::

        epoch  3/12  loss 0.612 acc 0.874 | val loss 0.551 acc 0.890 | lr 2.0e-04 | 95 s
    """
    width = len(str(epochs))
    nan = float("nan")
    text = f"epoch {row['epoch'] + 1:>{width}}/{epochs}  loss {row.get('loss', nan):.4f} " \
           f"acc {row.get('accuracy', nan):.4f} | val loss {row.get('val_loss', nan):.4f} " \
           f"acc {row.get('val_accuracy', nan):.4f} | lr {row.get('learning_rate', nan):.1e}"
    if "seconds" in row and not pd.isna(row["seconds"]):
        text += f" | {row['seconds']:.0f} s"
    return text


def history_lines(history: pd.DataFrame, epochs: int | None = None, monitor: str = "val_loss") -> list[str]:
    """The compact per-epoch lines of a saved ``history.csv`` (as printed while it trained; ``*`` the kept epoch)."""
    epochs = epochs or len(history)
    best = best_index(history[monitor], monitor) if len(history) else -1
    return [epoch_line(row, epochs) + ("  *" if i == best else "") for i, row in enumerate(history.to_dict("records"))]
