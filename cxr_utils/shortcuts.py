"""What a model can learn besides the disease: the source an image came from, and the patient's age.

Lesson 08's shortcut experiments. The masked runs (lungs hidden, only a border strip) are recipes of
:data:`cxr_utils.train.EXPERIMENTS`, trained like any other. Here:

- :func:`train_source_model` teaches the course's network (the control of the masked runs: group
  normalisation, per-image standardisation, 64 px, strong augmentation) to tell the four source
  collections apart, on the curated split (patient-disjoint), and keeps its test predictions in a
  folder of the runs folder; :func:`source_report` gives per-source recall with intervals. A network
  that names the collection from the pixels can use the collection as a proxy for the class, since
  every COVID-19 image comes from three collections and every other image from the fourth.
- :func:`ages` tabulates the patients' ages in the metadata, per class and source: the COVID-19
  patients are adults; the Kaggle Normals and Pneumonias are children (their metadata gives no age;
  the dataset's paper says aged one to five).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import atomic, data, paths
from cxr_utils.metrics import (
    bootstrap_weights,
    confusion_matrix,
    metrics_from_confusion,
    percentiles,
    resampling_groups,
    wilson_interval,
)

SOURCES = data.TARGETS["source"]
"""The four collections, in the order of the source network's outputs."""


def source_config(image_size: int = 64, epochs: int = 8, seed: int = 0, subset: int | None = None) -> dict:
    """Everything that decides the source network's run (what :func:`train_source_model` records and compares)."""
    return {"task": "source", "classes": list(SOURCES), "model": "efficient_cnn",
            "model_kwargs": {"norm": "group", "standardize": True, "stem_stride": 2, "n_classes": len(SOURCES)},
            "image_size": int(image_size), "channels": 3, "augment": "strong", "label_smoothing": 0.05,
            "class_weights": "balanced", "learning_rate": 1e-3, "warmup_epochs": 1.0, "weight_decay": 1e-4,
            "batch_size": 32, "epochs": int(epochs), "seed": int(seed), "subset": subset,
            "selection": "val_accuracy on the val split (highest)",
            "manifest_sha256": data.manifest_sha256(data.load_manifest())}


def _rows(split: str, config: dict) -> pd.DataFrame:
    from cxr_utils import label_indices

    df = data.load_manifest()
    rows = df[df["split"] == split]
    if config["subset"] is not None:
        rows = rows.iloc[data.stratified_subset(label_indices(rows["label"]), int(config["subset"]), config["seed"])]
    return rows


def train_source_model(image_size: int = 64, epochs: int = 8, seed: int = 0, subset: int | None = None,
                       name: str = "source_prediction", verbose: int = 1) -> Path:
    """Train the network to name each image's source collection; keep its test predictions; return the folder.

    The folder (``<runs>/<name>``) holds ``config.json``, ``history.csv``, ``predictions_test.csv`` (``path``,
    ``source``, ``label``, ``split_group`` and ``p_<source>``) and, written last, ``metrics.json``. When it
    already holds the same configuration, nothing is trained. The epoch kept is the one with the best
    validation accuracy; op determinism is on, as for every run.
    """
    import keras

    from cxr_utils import models, schedules, train

    config = source_config(image_size, epochs, seed, subset)
    folder = paths.runs_dir() / name
    with_metrics = folder / "metrics.json"
    if with_metrics.is_file() and json.loads((folder / "config.json").read_text()) == json.loads(
            atomic.to_json(config)):
        if verbose:
            print(f"{folder.name} is complete: nothing to train")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with_metrics.unlink(missing_ok=True)
    atomic.write_json(folder / "config.json", config)
    train.enable_determinism()
    keras.utils.set_random_seed(seed)
    _, y_train = data.load_split("train", image_size, 3, subset=subset, seed=seed, target="source")
    counts = np.bincount(y_train, minlength=len(SOURCES))
    weights = {k: float(len(y_train) / (len(SOURCES) * c)) if c else 0.0 for k, c in enumerate(counts)}
    steps = math.ceil(len(y_train) / config["batch_size"])
    model = models.efficient_cnn(image_size, 3, **config["model_kwargs"])
    schedule = schedules.WarmupCosineDecay(config["learning_rate"], steps, epochs, warmup_epochs=min(1.0, epochs - 1))
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=config["weight_decay"]),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config["label_smoothing"]),
                  metrics=["accuracy"])
    models.build_training_state(model)
    val = data.make_dataset("val", image_size=image_size, batch_size=64, seed=seed, subset=subset, target="source")
    history, best, best_weights = [], -1.0, None
    for epoch in range(epochs):
        t0 = time.perf_counter()
        ds = data.make_dataset("train", image_size=image_size, batch_size=config["batch_size"], augment="strong",
                               seed=seed, subset=subset, epoch=epoch, class_weights=weights, target="source")
        # shuffle=False: the pipeline shuffles itself, by the seed and the epoch
        logs = {k: v[-1] for k, v in model.fit(ds, validation_data=val, shuffle=False, verbose=0).history.items()}
        history.append({"epoch": epoch, **logs, "seconds": time.perf_counter() - t0})
        if logs["val_accuracy"] > best:
            best, best_weights = logs["val_accuracy"], model.get_weights()
        if verbose:
            print(f"source network, epoch {epoch + 1}/{epochs}: loss {logs['loss']:.4f} acc {logs['accuracy']:.4f} | "
                  f"val acc {logs['val_accuracy']:.4f} | {history[-1]['seconds']:.0f} s", flush=True)
    atomic.write_csv(folder / "history.csv", pd.DataFrame(history), float_format="%.6g")
    model.set_weights(best_weights)
    rows = _rows("test", config)
    x, _ = data.load_split("test", image_size, 3, subset=subset, seed=seed, target="source")
    from cxr_utils import preprocess

    probs = model.predict(preprocess.scale(x), batch_size=64, verbose=0)
    pred = rows[["path", "source", "label", "split_group"]].reset_index(drop=True)
    for j, s in enumerate(SOURCES):
        pred[f"p_{s}"] = probs[:, j].astype(np.float64)
    atomic.write_csv(folder / "predictions_test.csv", pred, float_format="%.6g")
    kept = int(np.argmax([h["val_accuracy"] for h in history]))
    atomic.write_json(with_metrics, {"complete": True, "best_epoch": kept, "best_val_accuracy": best,
                                     "seconds_per_epoch": float(np.median([h["seconds"] for h in history]))})
    return folder


def source_report(pred: pd.DataFrame, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """How well the source network names each collection on the test split, with intervals.

    Rows: each source's recall (share of its test images called that source) with its Wilson and patient
    bootstrap intervals and counts; then ``accuracy``, ``balanced accuracy`` (mean recall) and ``chance``
    (the largest source's share: what naming always that source would score).
    """
    y = np.array([SOURCES.index(s) for s in pred["source"]])
    p = pred[[f"p_{s}" for s in SOURCES]].to_numpy().argmax(axis=1)
    codes, _ = resampling_groups(pred)
    w = bootstrap_weights(codes, n_boot, seed)
    cm_reps = confusion_matrix(y, p, len(SOURCES), w)
    reps = metrics_from_confusion(cm_reps)
    cm = confusion_matrix(y, p, len(SOURCES))
    point = metrics_from_confusion(cm)
    rows = {}
    for k, s in enumerate(SOURCES):
        lo, hi = percentiles(reps["recall"][:, k][:, None], confidence)
        wl, wh = wilson_interval(cm[k, k], cm[k].sum(), confidence)
        rows[f"recall {s}"] = {"estimate": point["recall"][k], "ci_low": float(lo[0]), "ci_high": float(hi[0]),
                               "wilson_low": wl, "wilson_high": wh, "k": int(cm[k, k]), "n": int(cm[k].sum())}
    for key, name in (("accuracy", "accuracy"), ("macro_recall", "balanced accuracy")):
        lo, hi = percentiles(np.asarray(reps[key])[:, None], confidence)
        rows[name] = {"estimate": float(point[key]), "ci_low": float(lo[0]), "ci_high": float(hi[0])}
    share = np.bincount(y, minlength=len(SOURCES)) / len(y)
    rows["chance (always the largest source)"] = {"estimate": float(share.max())}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "figure"
    return out


def ages(root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The patients' ages the metadata gives, per class and source, for the curated images.

    Columns: ``images``, ``with an age``, ``median``, ``25 %``, ``75 %``, ``youngest``, ``oldest``. The Kaggle
    images have no age in their metadata (the dataset's paper: children aged one to five).
    """
    from cxr_utils.metadata import all_records

    root = Path(root) if root else paths.data_dir()
    manifest = data.load_manifest()
    records = all_records(root)[["path", "age"]].drop_duplicates("path")
    df = manifest[["path", "label", "source"]].merge(records, on="path", how="left")
    age = pd.to_numeric(df["age"], errors="coerce")
    df = df.assign(age=age)
    grouped = df.groupby(["label", "source"])["age"]
    table = pd.DataFrame({"images": grouped.size(), "with an age": grouped.count(), "median": grouped.median(),
                          "25 %": grouped.quantile(0.25), "75 %": grouped.quantile(0.75),
                          "youngest": grouped.min(), "oldest": grouped.max()})
    return table
