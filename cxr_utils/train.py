"""Train a named recipe into a run folder that says what was done, and can be resumed or reloaded.

A *recipe* (:data:`RECIPES`) is everything that decides a training run: network, input size,
augmentation, loss, class weights, optimiser and schedule, batch size, epochs.

- ``"paper"`` is the author's script as it was (``shared/paper/NOTES.md``), with one deliberate change:
  the script passed the **test** set as ``validation_data`` and so watched it while training; we
  validate on our own ``val`` split and look at test once, at the end.
- ``"improved"`` is the course's recipe: the small :func:`cxr_utils.models.efficient_cnn` with group
  normalisation and per-image standardisation at 128 px, the ``"strong"`` augmentation, balanced class
  weights and a warm-up cosine schedule.

How the recipes came to be (the candidates tried, the rules written before their runs, every look at
test) is the history of ``results/``; ``results/README.md`` indexes it.

:func:`train_recipe` trains one into ``runs/<name>/`` (the folder's files: :mod:`cxr_utils.runs`).
It trains one epoch per call of Keras' ``fit``, and after each epoch it writes, in this order, the
epoch's row of ``history.csv``, ``best.keras`` if the epoch is the best so far on validation, and a
backup to resume from (:class:`Backup`). Each epoch's shuffle and augmentation are a function of the
run's seed and the epoch number alone (:func:`cxr_utils.data.make_dataset`), so an interrupted run
resumed from its backup ends with exactly the weights an uninterrupted run would have. TensorFlow's
op determinism is on while a run trains, so the same config on the same data gives the same numbers
on the same kind of machine, however loaded it is.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from cxr_utils import CLASSES, atomic, label_indices, metrics, paths, predictions, preprocess, runs
from cxr_utils import data as cxr_data
from cxr_utils.runs import BACKUP_DIR, BEST_MODEL_FILE, CONFIG_FILE, ENVIRONMENT_FILE, HISTORY_FILE, METRICS_FILE

SELECTION_MONITOR = "val_loss"
"""The default quantity that picks ``best.keras``: the loss on the **validation** split (lowest wins).
A recipe may choose ``"val_accuracy"`` instead (highest wins); see :attr:`Recipe.monitor`."""


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a training run (see :data:`RECIPES`).

    Attributes:
        name: key in :data:`RECIPES` (or :data:`CANDIDATES`).
        description: one line.
        model: ``"paper_dcnn"`` or ``"efficient_cnn"`` (builders in :mod:`cxr_utils.models`).
        model_kwargs: extra arguments of the builder (``norm``, ``standardize`` ...).
        image_size: side of the square input in pixels.
        channels: 3 (RGB as the script decoded) or 1.
        augment: policy name in :data:`cxr_utils.augment.POLICIES`, or None.
        label_smoothing: Keras' ``label_smoothing`` (``eps / N`` on every class).
        class_weights: scheme of :func:`cxr_utils.losses.class_weights` (``"paper"``, ``"balanced"`` ...).
        schedule: ``"script"`` (:func:`cxr_utils.schedules.script_schedule`), ``"warmup_cosine"``
            (:class:`cxr_utils.schedules.WarmupCosineDecay`) or ``"constant"``.
        learning_rate: the peak rate of ``"warmup_cosine"``, the rate of ``"constant"`` (the script's
            schedule fixes its own rates).
        warmup_epochs: warm-up of ``"warmup_cosine"``.
        weight_decay: AdamW's decoupled weight decay (0: plain Adam, as the script).
        batch_size: images per batch (the global batch, whatever the number of devices).
        epochs: training epochs.
        notes: where the recipe departs from its source, in words.
        monitor: the validation quantity that chooses ``best.keras`` (``"val_loss"`` lowest, or
            ``"val_accuracy"`` highest). Recorded in the config's ``selection`` line.
        extra_train: images added to the training split from outside the manifest (None: none;
            ``"external_normals"``: the part of the external set's adult Normals set aside for training,
            lesson 08's de-confounding experiment; :func:`cxr_utils.external.extra_training_rows`).
    """

    name: str
    description: str
    model: str
    image_size: int
    augment: str | None
    label_smoothing: float
    class_weights: str
    schedule: str
    batch_size: int
    epochs: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    channels: int = 3
    learning_rate: float = 4e-4
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0
    notes: str = ""
    monitor: str = SELECTION_MONITOR
    extra_train: str | None = None


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        description="the author's script: paper_dcnn 80x80x3, its augmentation, smoothing 0.12, Adam with "
                    "its step schedule, class weights {10, 3, 1}, batch 32, 12 epochs",
        model="paper_dcnn",
        image_size=80,
        augment="paper",
        label_smoothing=0.12,
        class_weights="paper",
        schedule="script",
        learning_rate=4e-4,
        batch_size=32,
        epochs=12,
        notes="As the script, except the validation data: the script passed the test set as validation_data "
              "(it watched test while training); we validate on our val split and look at test once, at the end. "
              "The script kept its last epoch; we keep the epoch with the best val accuracy. Not val loss: this "
              "network, trained on contrast-cut images, has its lowest val loss after an early epoch that calls "
              "everything Normal (results/paper_selected_on_val_loss).",
        monitor="val_accuracy",
    ),
    "improved_v1": Recipe(
        name="improved_v1",
        description="efficient_cnn 80x80x3 (batch norm, separable convs, 0.75 M parameters), recommended "
                    "augmentation, smoothing 0.05, balanced class weights, AdamW with a 1-epoch warm-up to 1e-3 "
                    "(lesson 05's range test) then cosine decay, batch 32, 15 epochs",
        model="efficient_cnn",
        image_size=80,
        augment="recommended",
        label_smoothing=0.05,
        class_weights="balanced",
        schedule="warmup_cosine",
        learning_rate=1e-3,
        warmup_epochs=1.0,
        weight_decay=1e-4,
        batch_size=32,
        epochs=15,
        notes="The course's first improved recipe, set from lessons 02-05 before any run; replaced by 'improved'.",
    ),
}
RECIPES["improved"] = replace(
    RECIPES["improved_v1"], name="improved", image_size=128, augment="strong",
    model_kwargs={"norm": "group", "standardize": True, "stem_stride": 2},
    description="efficient_cnn with group normalisation and per-image standardisation, 128x128x3 input with a "
                "stride-2 first conv (0.75 M parameters), strong augmentation, smoothing 0.05, balanced class "
                "weights, AdamW with a 1-epoch warm-up to 1e-3 then cosine decay, batch 32, 15 epochs",
    notes="improved_v1 with group normalisation, per-image standardisation, 128 px and the strong augmentation; "
          "chosen after earlier looks at test (results/candidates/README.md), so its test figures are optimistic.")
RECIPES["improved_paper_augment"] = replace(
    RECIPES["improved_v1"], name="improved_paper_augment", augment="paper", epochs=5,
    description="ablation: improved_v1 (batch norm) trained with the paper's augmentation, 5 epochs",
    notes="Not a candidate: lesson 06 uses it to measure what the paper's contrast cut does to batch normalisation.")
"""The named recipes :func:`train_recipe` knows: ``paper`` and ``improved`` (lesson 06 trains both); ``improved_v1``,
the course's first improved recipe; ``improved_paper_augment``, ``improved_v1`` with the paper's augmentation (an
ablation for lesson 06)."""

_CANDIDATE_NOTE = "A variant of improved_v1 tried after its look at test; see results/candidates/README.md."
CANDIDATES: dict[str, Recipe] = {
    "improved_std80": replace(
        RECIPES["improved_v1"], name="improved_std80", epochs=8, model_kwargs={"standardize": True},
        description="improved_v1, with per-image standardisation at the input, 8 epochs", notes=_CANDIDATE_NOTE),
    "improved_std128": replace(
        RECIPES["improved_v1"], name="improved_std128", epochs=8, image_size=128,
        model_kwargs={"standardize": True, "stem_stride": 2},
        description="improved_v1 at 128 px with a stride-2 first conv and per-image standardisation, 8 epochs",
        notes=_CANDIDATE_NOTE),
    "improved_strong": replace(
        RECIPES["improved_v1"], name="improved_strong", epochs=10, image_size=128, augment="strong",
        model_kwargs={"standardize": True, "stem_stride": 2},
        description="improved_std128 with the strong augmentation (rotation 15 deg, zoom 20 %, shift 10 %, gamma), "
                    "10 epochs", notes=_CANDIDATE_NOTE),
    "improved_gn": replace(
        RECIPES["improved_v1"], name="improved_gn", model_kwargs={"norm": "group"},
        description="improved_v1 with group normalisation (8 groups) instead of batch normalisation",
        notes=_CANDIDATE_NOTE),
    "improved_gn128": replace(
        RECIPES["improved"], name="improved_gn128",
        description="improved_v1 with group normalisation, per-image standardisation, 128 px with a stride-2 first "
                    "conv and the strong augmentation, 15 epochs",
        notes=_CANDIDATE_NOTE + " It met the rule written before its run and became 'improved'."),
}
"""Variants of ``improved_v1`` whose runs are in ``results/candidates/``; :func:`train_recipe` and
:func:`resolve_config` accept their names like those of :data:`RECIPES`."""


EARLIER: dict[str, Recipe] = {
    "paper_selected_on_val_loss": replace(
        RECIPES["paper"], name="paper_selected_on_val_loss", monitor="val_loss",
        description="the paper recipe as first run: its checkpoint chosen on the lowest validation loss",
        notes="Kept to show why the paper recipe now selects on validation accuracy (lesson 06)."),
}
"""Recipes whose runs are in ``results/`` but that the course no longer trains; named so every committed run
folder's ``config.json`` names a recipe :func:`resolve_config` knows."""


_CONTROL = replace(
    RECIPES["improved"], name="control_64", image_size=64, epochs=8,
    description="the improved recipe at 64 px for 8 epochs: the control of lesson 08's masked runs",
    notes="Smaller and shorter than improved so that lesson 08's three runs fit in its time; compare the masked runs "
          "with this one, not with improved.")
EXPERIMENTS: dict[str, Recipe] = {
    "control_64": _CONTROL,
    "lungs_hidden": replace(
        _CONTROL, name="lungs_hidden", model_kwargs={**_CONTROL.model_kwargs, "input_mask": "hide_lungs"},
        description="control_64 with the lung fields blacked out in every image (models.InputMask)",
        notes="After Maguolo & Nanni (2021): far above chance without the lungs means the class is read elsewhere."),
    "border_only": replace(
        _CONTROL, name="border_only", model_kwargs={**_CONTROL.model_kwargs, "input_mask": "border_only"},
        description="control_64 seeing only an outer border strip of every image (models.InputMask)",
        notes="The strip holds no lung: what it reaches there is read from borders, labels, collimation."),
    "deconfounded_64": replace(
        _CONTROL, name="deconfounded_64", extra_train="external_normals",
        description="control_64 with 150 adult Normal chests of the external set added to training",
        notes="Lesson 08's de-confounding experiment, at the size of its control so that it fits in the lesson's "
              "time: compare with control_64. The split of the external Normals is fixed in "
              "cxr_utils.external.split_normals, written before any run. Chosen on validation as always."),
    "deconfounded": replace(
        RECIPES["improved"], name="deconfounded", extra_train="external_normals",
        description="the improved recipe with 150 adult Normal chests of the external set added to training",
        notes="The de-confounding experiment at full size: compare with improved. Too long for lesson 08's time "
              "(27 min of training here), so the lesson reads its committed results (results/lesson08/deconfounded); "
              "train it with `python -m cxr_utils.train deconfounded`."),
}
"""Lesson 08's runs: the shortcut experiments (a control and two masked runs at 64 px), the de-confounding
experiment at that size (``deconfounded_64``) and at full size (``deconfounded``, trained outside the lesson)."""


QUICK: dict[str, int] = {"epochs": 3, "subset": 800}
"""The short versions of the recipes that ``course.py run --quick`` trains (``train_recipe(name, **QUICK)``): 3 epochs
on at most 800 images per split. Their run folders have their own names (``paper-3ep-80px-n800``), so they never
stand in for the reference runs, and nothing exports them to ``results/``."""


def known_recipes() -> dict[str, Recipe]:
    """Every recipe :func:`resolve_config` accepts by name: :data:`RECIPES`, :data:`CANDIDATES`, :data:`EARLIER`,
    :data:`EXPERIMENTS`."""
    return {**RECIPES, **CANDIDATES, **EARLIER, **EXPERIMENTS}


# ---------------------------------------------------------------------------------------------
# Config and environment


def resolve_config(recipe: str | Recipe, *, epochs: int | None = None, image_size: int | None = None,
                   subset: int | None = None, seed: int = 0, batch_size: int | None = None) -> dict[str, Any]:
    """Return the full configuration of a run: the recipe's fields with the overrides applied.

    ``subset`` (when given) caps every split at that many images, stratified by class with ``seed``
    (:func:`cxr_utils.data.stratified_subset`); it is for quick runs, never for reference results.

    Raises:
        ValueError: an unknown recipe name (the message lists the known ones), ``epochs`` below 1, or a
            recipe that would choose its checkpoint on anything but validation data.
    """
    if isinstance(recipe, str):
        if recipe not in known_recipes():
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)} (or a candidate: "
                             f"{sorted(CANDIDATES)})")
        recipe = known_recipes()[recipe]
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs!r}")
    r = replace(recipe, epochs=int(epochs or recipe.epochs), image_size=int(image_size or recipe.image_size),
                batch_size=int(batch_size or recipe.batch_size))
    config = asdict(r)
    config["recipe"] = config.pop("name")
    monitor = config.pop("monitor")
    if not monitor.startswith("val_"):
        raise ValueError(f"recipe {r.name!r} selects on {monitor!r}; the best checkpoint must use validation data")
    config.update(subset=None if subset is None else int(subset), seed=int(seed),
                  selection=f"{monitor} on the val split ({'lowest' if monitor.endswith('loss') else 'highest'}); "
                            "test is never seen while training",
                  validation_split="val")
    return config


def data_fingerprint(config: dict[str, Any], manifest: pd.DataFrame | None = None) -> dict[str, Any]:
    """What a run trains on: the manifest's SHA-256 and the images per split (after ``subset``).

    A run folder records it in its ``config.json``; training into a folder whose fingerprint differs is
    refused, so a changed manifest never silently reuses or resumes a run of other data.
    """
    import hashlib

    df = cxr_data.load_manifest() if manifest is None else manifest
    counts = {s: int(len(split_rows(s, config["subset"], config["seed"], df))) for s in cxr_data.SPLITS}
    out = {"manifest_sha256": cxr_data.manifest_sha256(df), "images": counts}
    if config.get("extra_train"):
        from cxr_utils import external

        files, _ = external.extra_training_images(config["extra_train"])
        names = "\n".join(f"{Path(f).name}|{Path(f).stat().st_size}" for f in files)
        out["extra_train"] = {"images": len(files), "sha256": hashlib.sha256(names.encode()).hexdigest()}
    return out


def environment_info(precision: str | None = None) -> dict[str, Any]:
    """Versions and machine facts that produced a run; no host name (committed files name no machine)."""
    import tensorflow as tf

    import cxr_utils

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "cxr_utils": cxr_utils.__version__,
        "git_commit": commit,
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        **({"precision": precision} if precision else {}),
    }


# ---------------------------------------------------------------------------------------------
# Model, loss, optimiser


def build_model(config: dict[str, Any]) -> keras.Model:
    """Build the (uncompiled) network of ``config`` with :mod:`cxr_utils.models`."""
    from cxr_utils import models

    builders = {"paper_dcnn": models.paper_dcnn, "efficient_cnn": models.efficient_cnn}
    if config["model"] not in builders:
        raise ValueError(f"unknown model {config['model']!r}; choose one of {sorted(builders)}")
    return builders[config["model"]](config["image_size"], config["channels"], **config["model_kwargs"])


def make_schedule(config: dict[str, Any], steps_per_epoch: int):
    """Return the learning-rate schedule of ``config`` (:mod:`cxr_utils.schedules`), or a constant rate."""
    from cxr_utils import schedules

    if config["schedule"] == "script":
        return schedules.script_schedule(steps_per_epoch)
    if config["schedule"] == "warmup_cosine":
        warmup = min(config["warmup_epochs"], max(config["epochs"] - 1, 0))
        return schedules.WarmupCosineDecay(config["learning_rate"], steps_per_epoch, config["epochs"],
                                           warmup_epochs=warmup)
    if config["schedule"] == "constant":
        return config["learning_rate"]
    raise ValueError(f"unknown schedule {config['schedule']!r}; use 'script', 'warmup_cosine' or 'constant'")


def compile_model(model: keras.Model, config: dict[str, Any], steps_per_epoch: int) -> None:
    """Compile ``model`` with the recipe's optimiser, schedule and (smoothed) cross-entropy; metric accuracy.

    Its optimizer and metric variables are created at once (:func:`cxr_utils.models.build_training_state`), so
    that ``fit`` traces the training step once.
    """
    from cxr_utils import losses, models

    lr = make_schedule(config, steps_per_epoch)
    if config["weight_decay"]:
        optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config["weight_decay"])
    else:
        optimizer = keras.optimizers.Adam(learning_rate=lr)
    model.compile(optimizer=optimizer, loss=losses.keras_loss(config["label_smoothing"]), metrics=["accuracy"])
    models.build_training_state(model)


def learning_rate_after(model: keras.Model, config: dict[str, Any], steps_per_epoch: int) -> float:
    """The rate the optimizer will use for its next step: the schedule at its step counter."""
    schedule = make_schedule(config, steps_per_epoch)
    step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return float(keras.ops.convert_to_numpy(schedule(step))) if callable(schedule) else float(schedule)


# ---------------------------------------------------------------------------------------------
# What happens after each epoch: the history row, the best checkpoint, the backup


class History:
    """``history.csv`` of a run: one row per finished epoch, rewritten atomically after each epoch.

    On a resumed run it keeps the rows of the epochs the backup holds and drops any later ones (an
    epoch whose state was not backed up is trained again).
    """

    COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds", "wall_seconds")
    """``seconds``: the epoch's ``fit`` (training and validation); ``wall_seconds``: the whole epoch, its input
    pipeline, history, checkpoint and backup included (what a run takes, epoch by epoch)."""

    def __init__(self, path: Path, epochs: int, monitor: str = SELECTION_MONITOR,
                 say: Callable[[str], None] = print, start: int = 0):
        self.path, self.epochs, self.monitor, self.say = Path(path), epochs, monitor, say
        self.rows: list[dict] = []
        if start and self.path.is_file():
            old = pd.read_csv(self.path)
            self.rows = old[old["epoch"] < start].to_dict("records")
        if len(self.rows) != start:
            raise RuntimeError(f"{runs.relative(self.path)} holds {len(self.rows)} epochs but the backup holds "
                               f"{start}; the run folder is inconsistent: train it again with restart=True")
        self._write()

    def _write(self) -> None:
        atomic.write_csv(self.path, pd.DataFrame(self.rows, columns=list(self.COLUMNS)), float_format="%.6g")

    def add(self, epoch: int, logs: dict[str, float], learning_rate: float, seconds: float) -> dict:
        """Append epoch ``epoch``'s row, write the file and print the compact line (``*``: best so far)."""
        row = {"epoch": epoch, **{k: float(logs[k]) for k in self.COLUMNS[1:5] if k in logs},
               "learning_rate": learning_rate, "seconds": seconds, "wall_seconds": float("nan")}
        self.rows.append(row)
        self._write()
        best = runs.best_index([r[self.monitor] for r in self.rows], self.monitor) == len(self.rows) - 1
        self.say(runs.epoch_line(row, self.epochs) + ("  *" if best else ""))
        return row

    def finish(self, wall_seconds: float) -> None:
        """Record the last epoch's whole wall time (written once its checkpoint and backup are on disk)."""
        self.rows[-1]["wall_seconds"] = wall_seconds
        self._write()


class BestCheckpoint:
    """Keep ``best.keras``: the model of the epoch with the best **validation** value of ``monitor``.

    ``monitor`` must be a ``val_`` quantity (the validation data of each epoch is the val split); the
    model is saved without its optimizer, atomically. On a resumed run the best so far is read from
    the history rows already on disk.
    """

    def __init__(self, path: Path, monitor: str = SELECTION_MONITOR, history: list[dict] | None = None):
        if not monitor.startswith("val_"):
            raise ValueError(f"the best checkpoint must be chosen on validation data, got monitor={monitor!r}")
        self.path, self.monitor = Path(path), monitor
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._copy: keras.Model | None = None
        rows = [r for r in (history or []) if self.monitor in r]
        if rows and self.path.is_file():
            i = runs.best_index([r[self.monitor] for r in rows], self.monitor)
            self.best, self.best_epoch = float(rows[i][self.monitor]), int(rows[i]["epoch"])

    def improves(self, value: float) -> bool:
        """True when ``value`` beats the best so far (lower for a loss, higher otherwise; ties do not)."""
        if self.best is None:
            return True
        return value < self.best if self.monitor.endswith("loss") else value > self.best

    def update(self, epoch: int, logs: dict[str, float], model: keras.Model) -> bool:
        """Save ``model`` as ``best.keras`` if this epoch's validation value is the best so far; say whether it was.

        Raises:
            KeyError: the monitored quantity is missing from ``logs`` (``fit`` needs validation data).
        """
        if self.monitor not in logs:
            raise KeyError(f"'{self.monitor}' is missing from the epoch logs: fit() needs validation_data")
        value = float(logs[self.monitor])
        if not self.improves(value):
            return False
        self.best, self.best_epoch = value, int(epoch)
        if self._copy is None:  # the weights in an uncompiled copy: saved without the optimizer (a third of the size)
            self._copy = keras.models.clone_model(model)
        self._copy.set_weights(model.get_weights())
        with atomic.replacing(self.path, fsync=False) as tmp:  # synced once, when the run completes
            self._copy.save(tmp)
        return True


class ResumeError(RuntimeError):
    """Resuming would not continue the run exactly (a Keras that behaves differently, or a damaged backup)."""


SEED_STATE_SUFFIX = "seed_generator_state"
"""How Keras 3 names the state variable of a layer's random seed generator (dropout's masks). ``model.save``
leaves these out, so :class:`Backup` saves them itself; it checks that it finds one per dropout layer."""


class Backup:
    """The state a run resumes from, in ``backup/``: written after each epoch, removed when the run is complete.

    ``model_<k>.keras`` (weights, optimizer and its step counter, via ``model.save``), ``seed_states_<k>.npz``
    (the dropout layers' random states, which ``model.save`` leaves out) and, written last, ``state.json``
    naming them and ``k``, the epochs done. Only public Keras API is used; where it depends on Keras
    behaviour beyond it (the name of the seed-state variables), it checks and raises :class:`ResumeError`.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.state_file = self.folder / "state.json"

    @staticmethod
    def seed_states(model: keras.Model) -> list:
        """The dropout layers' seed-generator state variables, checked to be one per dropout layer.

        Raises:
            ResumeError: this Keras names or keeps those states differently, so a resumed run would draw
                other dropout masks than an uninterrupted one.
        """
        found = [v for v in model.non_trainable_variables if v.path.endswith(SEED_STATE_SUFFIX)]
        dropouts = sum(isinstance(layer, keras.layers.Dropout) and layer.rate > 0 for layer in model.layers)
        if len(found) < dropouts:
            raise ResumeError(
                f"Keras {keras.__version__} keeps dropout's random state where the course does not look for it "
                f"({dropouts} dropout layers, {len(found)} variables named '*{SEED_STATE_SUFFIX}'), so a resumed "
                "run would not equal an uninterrupted one. Install the pinned keras (pyproject.toml), or train "
                "without interruption (restart=True).")
        return found

    def epochs_done(self) -> int:
        """The epochs the backup holds (0 when there is none)."""
        if not self.state_file.is_file():
            return 0
        return int(self._state()["epochs_done"])

    def _state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError) as exc:
            raise ResumeError(f"{runs.relative(self.state_file)} cannot be read ({exc}); train the run again "
                              "with restart=True") from None

    def save(self, model: keras.Model, epochs_done: int) -> None:
        """Back up ``model`` after ``epochs_done`` epochs; then remove the previous backup's files."""
        states = self.seed_states(model)
        model_file = self.folder / f"model_{epochs_done}.keras"
        seeds_file = self.folder / f"seed_states_{epochs_done}.npz"
        # Renamed into place whole, but not forced to disk: a backup lost to a power cut costs a restart, while
        # syncing a gigabyte every epoch costs seconds of every epoch. state.json, which names them, is synced.
        with atomic.replacing(model_file, fsync=False) as tmp:
            model.save(tmp)
        with atomic.replacing(seeds_file, fsync=False) as tmp:
            np.savez(tmp, **{f"s{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(states)})
        atomic.write_json(self.state_file, {"epochs_done": epochs_done, "model": model_file.name,
                                            "seed_states": seeds_file.name, "keras": keras.__version__})
        for old in self.folder.glob("*_*.*"):
            if old.name not in (model_file.name, seeds_file.name):
                old.unlink(missing_ok=True)

    def restore(self) -> keras.Model:
        """Return the backed-up model (compiled, optimizer state and step counter included), seed states restored."""
        from cxr_utils import models, schedules  # noqa: F401  (register the course's layers and schedules)

        state = self._state()
        try:
            model = keras.models.load_model(self.folder / state["model"])
            with np.load(self.folder / state["seed_states"]) as saved:
                values = [saved[f"s{i}"] for i in range(len(saved.files))]
        except (OSError, ValueError, KeyError) as exc:
            raise ResumeError(f"the backup in {runs.relative(self.folder)} cannot be read ({exc}); train the run "
                              "again with restart=True") from None
        variables = self.seed_states(model)
        if len(variables) != len(values):
            raise ResumeError(f"the backup holds {len(values)} seed states but the model has {len(variables)}; "
                              "train the run again with restart=True")
        for v, value in zip(variables, values, strict=True):
            v.assign(value)
        return model


# ---------------------------------------------------------------------------------------------
# Training


def split_rows(split: str, subset: int | None = None, seed: int = 0,
               manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """Return the manifest rows of ``split`` in the order :func:`cxr_utils.data.load_split` returns images."""
    df = cxr_data.load_manifest() if manifest is None else manifest
    rows = df[df["split"] == split]
    if subset is not None:
        keep = cxr_data.stratified_subset(label_indices(rows["label"]), int(subset), seed)
        rows = rows.iloc[keep]
    return rows


def enable_determinism() -> None:
    """Turn TensorFlow's op determinism on, for the rest of this process (TensorFlow offers no way back).

    With it, an op gives the same output for the same input on the same hardware, and ``tf.data`` runs
    deterministically. :func:`train_recipe` calls it before it trains; Keras' seeds it sets from the run's seed.
    """
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def _say(verbose: int) -> Callable[[str], None]:
    return (lambda text: print(text, flush=True)) if verbose else (lambda text: None)


def _check_folder(run_dir: Path, config: dict, restart: bool, say: Callable[[str], None]) -> bool:
    """Prepare ``run_dir`` for ``config``; return True when it already holds the complete run (nothing to do).

    Raises:
        ValueError: the folder holds a run of another configuration or of other data.
    """
    if not run_dir.exists():
        return False
    if restart:
        say(f"restart: removing {runs.relative(run_dir)}")
        shutil.rmtree(run_dir)
        return False
    old = None
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((run_dir / CONFIG_FILE).read_text())
    if old is not None:
        same = json.loads(atomic.to_json(old)) == json.loads(atomic.to_json(config))
        if not same and old.get("data") != config["data"] and \
                {k: v for k, v in old.items() if k != "data"} == {k: v for k, v in config.items() if k != "data"}:
            o, n = (old.get("data") or {}).get("manifest_sha256", "none")[:12], config["data"]["manifest_sha256"][:12]
            raise ValueError(f"run folder '{runs.relative(run_dir)}' was trained on other data (manifest {o}, now "
                             f"{n}): the curated data changed since. Pass restart=True to train it again on the "
                             "current data, or choose another run_name")
        if not same:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(f"run folder '{runs.relative(run_dir)}' holds a run with a different configuration "
                             f"({', '.join(changed)}); choose another run_name or pass restart=True")
    if runs.is_complete(run_dir):
        say(f"{runs.relative(run_dir)} is complete: nothing to train (restart=True trains it again)")
        return True
    return False


def _precision(config: dict, requested: str, run_dir: Path, restart: bool) -> tuple[str, str]:
    """The dtype policy a run uses and why (:func:`cxr_utils.precision.choose`); a run being resumed keeps its own."""
    from cxr_utils import precision

    if requested == "auto" and not restart:
        with contextlib.suppress(OSError, ValueError, KeyError):
            old = json.loads((run_dir / CONFIG_FILE).read_text())["precision"]
            return old, "auto: as the run folder records (resumed or complete)"

    def measure(policy: str) -> float:
        return precision.probe(lambda: build_model(config), policy, config["image_size"], config["channels"],
                               config["batch_size"])

    return precision.choose(requested, measure)


def default_run_name(config: dict[str, Any]) -> str:
    """The run folder's default name: ``<recipe>`` for the recipe as defined, else
    ``<recipe>-<epochs>ep-<size>px[-n<subset>][-seed<s>][-b<batch>]``."""
    base = known_recipes().get(config["recipe"])
    if base is None:
        raise ValueError(f"recipe {config['recipe']!r} is not a named recipe; give the run a run_name")
    if (config["epochs"], config["image_size"], config["subset"], config["seed"], config["batch_size"]) == \
            (base.epochs, base.image_size, None, 0, base.batch_size):
        return base.name
    name = f"{base.name}-{config['epochs']}ep-{config['image_size']}px"
    if config["subset"] is not None:
        name += f"-n{config['subset']}"
    if config["seed"]:
        name += f"-seed{config['seed']}"
    if config["batch_size"] != base.batch_size:
        name += f"-b{config['batch_size']}"
    return name


def train_recipe(recipe: str | Recipe, run_name: str | None = None, *, epochs: int | None = None,
                 image_size: int | None = None, subset: int | None = None, seed: int = 0,
                 restart: bool = False, verbose: int = 2, batch_size: int | None = None,
                 extra_callbacks: list | None = None, deterministic: bool = True, precision: str = "auto",
                 strategy: Any = None) -> Path:
    """Train recipe ``recipe`` into ``runs_dir()/run_name`` and return that folder.

    Args:
        recipe: a key of :data:`RECIPES` (``"paper"``, ``"improved"``) or :data:`CANDIDATES`, or a
            :class:`Recipe` (then give ``run_name``).
        run_name: folder name under :func:`cxr_utils.paths.runs_dir` (default :func:`default_run_name`).
        epochs, image_size, batch_size: override the recipe's values.
        subset: use at most this many images of each split (stratified), for quick runs.
        seed: seeds the initial weights, dropout, each epoch's shuffle and augmentation, and the subset.
        restart: delete the folder of this name (complete or not) and train from scratch.
        verbose: 0 silent; otherwise one line per epoch and a few lines on what happens.
        extra_callbacks: more Keras callbacks for each epoch's ``fit``.
        deterministic: turn TensorFlow's op determinism on (:func:`enable_determinism`). Recorded in the
            config. False only to measure what determinism costs, or on a GPU whose kernels lack it.
        precision: ``"auto"`` (mixed precision only where the hardware has it and a probe shows it faster;
            :mod:`cxr_utils.precision`), or ``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"``. The
            policy used is recorded in the config, the reason in ``environment.json``.
        strategy: ``None`` (one device), ``"mirrored"`` (every GPU of this machine), ``"multiworker"``
            (several machines, ``TF_CONFIG``) or a ``tf.distribute.Strategy`` (:mod:`cxr_utils.devices`).
            The batch size stays the global batch; the strategy and its replicas are recorded in the
            config. Only the chief writes the run folder; other workers keep theirs in a hidden folder
            beside it (``.<run_name>.worker<k>``) until the run is complete.

    Returns:
        The run folder. When it already holds a complete run of the same configuration, nothing is
        trained; an incomplete one is resumed after its last backed-up epoch.

    Raises:
        ValueError: the folder holds a run of a different configuration or of other data (pick another
            ``run_name`` or pass ``restart=True``).
        ResumeError: the backup cannot be resumed exactly (the message says why and what to do).
    """
    from cxr_utils import devices

    dist = devices.strategy_for(strategy)
    if isinstance(recipe, Recipe) and run_name is None:
        raise ValueError(f"a recipe given as an object ({recipe.name!r}) needs a run_name")
    config = resolve_config(recipe, epochs=epochs, image_size=image_size, subset=subset, seed=seed,
                            batch_size=batch_size)
    config["deterministic"] = bool(deterministic)
    config["strategy"] = devices.describe(dist)
    manifest = cxr_data.load_manifest()
    config["data"] = data_fingerprint(config, manifest)
    name = run_name or default_run_name(config)
    chief = devices.is_chief(dist)
    run_dir = paths.runs_dir() / (name if chief else f".{name}.worker{dist.cluster_resolver.task_id}")
    say = _say(verbose and chief)
    config["precision"], why = _precision(config, precision, run_dir, restart)
    if _check_folder(run_dir, config, restart, say):
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_json(run_dir / CONFIG_FILE, config)
    env = {**environment_info(precision=config["precision"]), "precision_reason": why}
    atomic.write_json(run_dir / ENVIRONMENT_FILE, env)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)  # a metrics file that is_complete() rejected: never keep it
    if deterministic:
        enable_determinism()
    _fit(config, run_dir, manifest, say, extra_callbacks or [], dist)
    if not chief:  # the chief evaluates and writes the run; this worker's copy has served its purpose
        shutil.rmtree(run_dir, ignore_errors=True)
        return paths.runs_dir() / name
    return _finish(config, run_dir, env, manifest, say)


def _fit(config: dict, run_dir: Path, manifest: pd.DataFrame, say: Callable[[str], None],
         extra_callbacks: list, dist) -> None:
    """Train the epochs not yet done, one ``fit`` call each, writing history, best model and backup after each."""
    from cxr_utils import losses, models

    keras.utils.set_random_seed(config["seed"])
    size, ch, sub, seed, epochs = (config[k] for k in ("image_size", "channels", "subset", "seed", "epochs"))
    train_rows = split_rows("train", sub, seed, manifest)
    extra = None
    if config.get("extra_train"):
        from cxr_utils import external

        extra = external.extra_training_images(config["extra_train"])
    train_labels = np.concatenate([label_indices(train_rows["label"]), extra[1] if extra else []]).astype(int)
    steps = math.ceil(len(train_labels) / config["batch_size"])
    counts = np.bincount(train_labels, minlength=len(CLASSES))
    weights = losses.class_weights(counts, config["class_weights"])
    val = cxr_data.make_dataset("val", image_size=size, channels=ch, batch_size=64, seed=seed, subset=sub,
                                manifest=manifest)
    backup = Backup(run_dir / BACKUP_DIR)
    start = backup.epochs_done()
    if start:
        with dist.scope():
            model = models.build_training_state(backup.restore())
        say(f"resuming after epoch {start} of {epochs} (state restored from {BACKUP_DIR}/)")
    else:
        from cxr_utils import precision

        with precision.policy(config["precision"]), dist.scope():
            model = build_model(config)
            compile_model(model, config, steps)
        weights_text = {CLASSES[k]: round(v, 4) for k, v in weights.items()}
        replicas = config["strategy"]["replicas"]
        where = f", {replicas} replicas ({config['strategy']['name']})" if replicas > 1 else ""
        say(f"training '{config['recipe']}' into {runs.relative(run_dir)}: {model.count_params():,} parameters, "
            f"{len(train_labels)} training images ({steps} batches of {config['batch_size']}{where}), {epochs} epochs, "
            f"class weights {weights_text}")
    monitor = runs.monitor_of(config)
    history = History(run_dir / HISTORY_FILE, epochs, monitor, say, start)
    best = BestCheckpoint(run_dir / BEST_MODEL_FILE, monitor, history.rows)
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False,
                                              profile_batch=0)
    loop = MultiWorkerLoop(model, config, dist, run_dir) if config["strategy"]["workers"] > 1 else None
    for epoch in range(start, epochs):
        t_epoch = time.perf_counter()
        train = cxr_data.make_dataset("train", image_size=size, channels=ch, batch_size=config["batch_size"],
                                      augment=config["augment"], seed=seed, subset=sub, manifest=manifest,
                                      epoch=epoch, class_weights=weights, extra=extra)
        t0 = time.perf_counter()
        if loop is not None:
            logs = loop.epoch(epoch, train, val, extra_callbacks)
        else:
            # shuffle=False: the pipeline shuffles itself, by the seed and the epoch
            fitted = model.fit(train, validation_data=val, initial_epoch=epoch, epochs=epoch + 1, shuffle=False,
                               callbacks=[tensorboard, *extra_callbacks], verbose=0)
            logs = {k: v[-1] for k, v in fitted.history.items()}
        history.add(epoch, logs, learning_rate_after(model, config, steps), time.perf_counter() - t0)
        best.update(epoch, logs, model)
        if epoch + 1 < epochs:  # after both: a backed-up epoch always has its history row and best model
            backup.save(model, epoch + 1)  # (after the last epoch the run completes at once; nothing to resume)
        history.finish(time.perf_counter() - t_epoch)


class MultiWorkerLoop:
    """One epoch of training and validation under ``MultiWorkerMirroredStrategy``, where Keras' ``fit`` fails.

    Keras 3.15's ``fit`` cannot start under that strategy (it reduces a batch of distributed inputs
    eagerly before training; keras-team/keras#20585; ``tests/test_distribute.py`` checks it still fails,
    so this loop can go when Keras mends it). This loop computes what ``fit`` computes, with public API
    only: each replica's share of the class-weighted, label-smoothed loss over the **global** batch, so
    that the optimizer's sum of the replicas' gradients is the gradient of the whole batch; the
    epoch's ``loss`` weighted by class, its ``accuracy`` not (as ``fit`` reports them); validation
    unweighted; TensorBoard scalars under the names Keras uses.
    """

    def __init__(self, model: keras.Model, config: dict, strategy, run_dir: Path):
        import tensorflow as tf

        self.model, self.strategy, self.tf = model, strategy, tf
        smoothing = config["label_smoothing"]
        self.loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing, reduction=None)
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
        self.writers = {k: tf.summary.create_file_writer(str(run_dir / "tensorboard" / k))
                        for k in ("train", "validation")}
        self._train = tf.function(self._train_batch)
        self._test = tf.function(self._test_batch)

    def _train_batch(self, batch):
        tf, model = self.tf, self.model

        def step(x, y, w):
            n_global = tf.distribute.get_replica_context().all_reduce("sum", tf.cast(tf.shape(x)[0], tf.float32))
            with tf.GradientTape() as tape:
                p = model(x, training=True)
                weighted = self.loss(y, p) * w
                loss = tf.reduce_sum(weighted) / n_global
                scaled = model.optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            model.optimizer.apply(grads, model.trainable_variables)
            hit = tf.cast(tf.equal(tf.argmax(p, -1), tf.argmax(y, -1)), tf.float32)
            return tf.stack([tf.reduce_sum(weighted), tf.reduce_sum(hit), tf.cast(tf.shape(x)[0], tf.float32)])

        return self.strategy.reduce("SUM", self.strategy.run(step, args=batch), axis=None)

    def _test_batch(self, batch):
        tf = self.tf

        def step(x, y):
            p = self.model(x, training=False)
            hit = tf.cast(tf.equal(tf.argmax(p, -1), tf.argmax(y, -1)), tf.float32)
            return tf.stack([tf.reduce_sum(self.loss(y, p)), tf.reduce_sum(hit), tf.cast(tf.shape(x)[0], tf.float32)])

        return self.strategy.reduce("SUM", self.strategy.run(step, args=batch), axis=None)

    def epoch(self, epoch: int, train, val, callbacks: list) -> dict[str, float]:
        """Train one epoch on ``train`` and validate on ``val``; return the logs ``fit`` would have returned."""
        total = np.zeros(3)
        for batch in self.strategy.experimental_distribute_dataset(train):
            total += keras.ops.convert_to_numpy(self._train(batch))
        tested = np.zeros(3)
        for batch in self.strategy.experimental_distribute_dataset(val):
            tested += keras.ops.convert_to_numpy(self._test(batch))
        logs = {"loss": total[0] / total[2], "accuracy": total[1] / total[2],
                "val_loss": tested[0] / tested[2], "val_accuracy": tested[1] / tested[2]}
        for split, keys in (("train", ("loss", "accuracy")), ("validation", ("val_loss", "val_accuracy"))):
            with self.writers[split].as_default():
                for key in keys:
                    self.tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", logs[key], step=epoch)
        for cb in callbacks:
            cb.set_model(self.model)
            cb.on_epoch_end(epoch, logs)
        return logs


def predict_split(model: keras.Model, split: str, *, image_size: int | None = None, channels: int = 3,
                  subset: int | None = None, seed: int = 0, batch_size: int = 64,
                  manifest: pd.DataFrame | str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Predict every image of one split (unaugmented) and return its predictions table.

    Args:
        model: a Keras model with a 3-way softmax output (in the order of :data:`cxr_utils.CLASSES`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: input side in pixels (default: the model's input size).
        channels, subset, seed, manifest: as :func:`cxr_utils.data.load_split`.
        batch_size: images per prediction batch.

    Returns:
        A predictions table (:mod:`cxr_utils.predictions`): ``path`` relative to the data directory,
        ``label``, ``split_group`` (the manifest's, or ``patient_id`` when it has none), probabilities.
    """
    if image_size is None:
        image_size = int(model.input_shape[1])
    df = cxr_data.load_manifest(manifest) if not isinstance(manifest, pd.DataFrame) else manifest
    x, y = cxr_data.load_split(split, image_size, channels, df, subset, seed)
    rows = split_rows(split, subset, seed, df)
    if not (label_indices(rows["label"]) == y).all():
        raise RuntimeError("manifest rows and cached images are out of step; run `cxr-data curate` again")
    files = pd.DataFrame({"path": rows["path"].to_numpy(), "label": rows["label"].to_numpy(),
                          "split_group": (rows["split_group"] if "split_group" in rows else rows["patient_id"])
                          .to_numpy()})
    return predictions.predictions_frame(files, model.predict(preprocess.scale(x), batch_size=batch_size, verbose=0))


def _finish(config: dict, run_dir: Path, env: dict, manifest: pd.DataFrame, say: Callable[[str], None]) -> Path:
    """Evaluate ``best.keras`` on val and (once) on test, write predictions, then ``metrics.json`` last."""
    history = pd.read_csv(run_dir / HISTORY_FILE)
    if len(history) < config["epochs"]:
        raise RuntimeError(f"{runs.relative(run_dir)}: history has {len(history)} of {config['epochs']} epochs; "
                           "training did not finish (call train_recipe again to resume)")
    atomic.sync(run_dir / BEST_MODEL_FILE)  # on disk before metrics.json says the run is complete
    model = runs.load_model(run_dir)
    kw = {"image_size": config["image_size"], "channels": config["channels"], "subset": config["subset"],
          "seed": config["seed"], "manifest": manifest}
    pred_val = predict_split(model, "val", **kw)
    pred_test = predict_split(model, "test", **kw)  # the one look at test, after training is over
    predictions.write_predictions(run_dir / "predictions_val.csv", pred_val)
    predictions.write_predictions(run_dir / "predictions_test.csv", pred_test)
    monitor = runs.monitor_of(config)
    best_epoch = runs.best_index(history[monitor], monitor)
    seconds = history["seconds"].to_numpy()
    result = {
        "recipe": config["recipe"],
        "run_name": run_dir.name,
        "complete": True,
        "epochs_run": int(len(history)),
        "best_epoch": best_epoch,
        "selection": config["selection"],
        "monitor": monitor,
        "best_value": float(history[monitor].iloc[best_epoch]),
        "best_val_loss": float(history["val_loss"].iloc[best_epoch]),
        "seconds_per_epoch": float(np.median(seconds)),
        "seconds_per_epoch_mean": float(seconds.mean()),
        "seconds_total": float(seconds.sum()),
        "params": int(model.count_params()),
        "image_size": config["image_size"],
        "cpu_count": env.get("cpu_count"),
        "val": metrics.summary(pred_val),
        "test": metrics.summary(pred_test),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_json(run_dir / METRICS_FILE, result)  # last, atomically: from now on the run is complete
    shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
    t = result["test"]
    say(f"done: best epoch {best_epoch + 1} (by {monitor}); val accuracy {result['val']['accuracy']:.3f}; "
        f"test accuracy {t['accuracy']:.3f}, recall " +
        ", ".join(f"{c} {r:.3f}" for c, r in t["recall"].items() if r is not None) +
        f"; {result['seconds_per_epoch']:.0f} s/epoch")
    return run_dir


def estimate_seconds(recipe: str, *, epochs: int | None = None, image_size: int | None = None,
                     subset: int | None = None, seed: int = 0, steps: int = 3) -> dict[str, Any]:
    """Estimate how long training ``recipe`` takes on this machine, from a few measured training steps.

    The recipe's network trains ``steps`` batches of random images (:func:`cxr_utils.precision.probe`,
    float32); an epoch is then the training split at that rate plus the validation split at three times
    it (a forward pass costs about a third of a training step). A complete run folder of the same
    configuration costs nothing (and no probe): its ``epoch_seconds`` is then the run's measured median. The
    estimate is rough (it leaves out the input pipeline, which keeps up, and what else the machine is doing):
    lesson 06 prints it next to what the run then took.

    Returns:
        ``{"recipe", "epochs", "images_per_second", "epoch_seconds", "seconds", "complete"}``.
    """
    from cxr_utils import precision

    config = resolve_config(recipe, epochs=epochs, image_size=image_size, subset=subset, seed=seed)
    manifest = cxr_data.load_manifest()
    counts = {s: len(split_rows(s, config["subset"], seed, manifest)) for s in ("train", "val")}
    folder = paths.runs_dir() / default_run_name(config)  # where train_recipe would train it
    same = ("recipe", "epochs", "image_size", "subset", "seed", "batch_size")
    if runs.is_complete(folder) and all(runs.read_config(folder).get(k) == config[k] for k in same):
        measured = json.loads((folder / "metrics.json").read_text())["seconds_per_epoch"]
        return {"recipe": config["recipe"], "epochs": config["epochs"], "images_per_second": None,
                "epoch_seconds": measured, "seconds": 0.0, "complete": True}
    rate = precision.probe(lambda: build_model(config), "float32", config["image_size"], config["channels"],
                           config["batch_size"], steps=steps)
    epoch = counts["train"] / rate + counts["val"] / (3 * rate)
    return {"recipe": config["recipe"], "epochs": config["epochs"], "images_per_second": rate,
            "epoch_seconds": epoch, "seconds": epoch * config["epochs"], "complete": False}


def main(argv: list[str] | None = None) -> int:
    """``python -m cxr_utils.train RECIPE ... [options]``: train recipes (or estimate how long they take)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cxr_utils.train", description="Train named recipes into runs/.")
    parser.add_argument("recipes", nargs="+", help=f"recipe names: {', '.join(RECIPES)}")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--subset", type=int, help="at most this many images per split (a quick run)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--precision", default="auto", help="auto, float32, mixed_bfloat16 or mixed_float16")
    parser.add_argument("--strategy", default=None, help="mirrored (every GPU here) or multiworker (TF_CONFIG)")
    parser.add_argument("--run-name", help="the run folder's name under runs/ (one recipe only)")
    parser.add_argument("--estimate", action="store_true", help="print the estimated duration as JSON; train nothing")
    args = parser.parse_args(argv)
    if args.run_name and len(args.recipes) != 1:
        parser.error("--run-name names one run: give one recipe")
    kw = {"epochs": args.epochs, "subset": args.subset, "image_size": args.image_size}
    if args.estimate:
        print(json.dumps([estimate_seconds(r, **kw) for r in args.recipes]))
        return 0
    from cxr_utils import devices

    strategy = devices.strategy_for(args.strategy)  # first: a multi-worker strategy must exist before any op runs
    for name in args.recipes:
        train_recipe(name, args.run_name, precision=args.precision, strategy=strategy, **kw)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
