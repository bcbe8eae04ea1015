"""Comparisons: the paper's published figures next to ours, and two runs on the same test images.

- :func:`compare_with_paper` puts every figure of the paper's Tables 3-5 next to each run's, each
  with its interval: for the paper a Wilson interval on its counts (the paper has no patient ids),
  for ours the bootstrap over patient groups of :func:`cxr_utils.evaluate.evaluate_predictions`.
- :func:`paired_comparison` compares two runs image by image: McNemar's exact test and a paired
  bootstrap of the accuracy difference over patient groups.
- :func:`reproduction` says whether a run reproduced the committed record of its recipe, figure by figure.
- :func:`runs_table` puts several committed runs side by side: validation accuracy, test figures with
  their intervals, size and speed (``results/candidates/summary.csv``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, paper
from cxr_utils.evaluate import Report, evaluate_predictions
from cxr_utils.metrics import (
    bootstrap_weights,
    interval_text,
    mcnemar_exact,
    metrics_from_confusion,
    percentiles,
    resampling_groups,
    wilson_interval,
)
from cxr_utils.predictions import PROB_COLUMNS, PredictionsError, load_predictions, true_labels, validate_predictions


def _paper_figures(confidence: float = 0.95) -> pd.DataFrame:
    """Return the paper's test figures with Wilson intervals from its counts (images assumed independent).

    Table 5 gives exact counts. For the Keras precision/recall of Table 3 the counts are implied:
    ``TP = round(recall x N)``, ``calls = round(TP / precision)`` (740 test images, 100 of them COVID-19).
    """
    cm = paper.CONFUSION.to_numpy()
    n = int(cm.sum())
    m = metrics_from_confusion(cm)
    res, tcp = paper.RESULTS, paper.TRUE_CLASS_PROBABILITY
    rows = {}

    def add(key, value, k=np.nan, n_=np.nan, lo=np.nan, hi=np.nan):
        if np.isfinite(n_):
            lo, hi = wilson_interval(k, n_, confidence)
        rows[key] = {"published": float(value), "published_low": lo, "published_high": hi}

    add(("overall", "accuracy"), res.at["test", "accuracy"], np.trace(cm), n)
    tp = round(res.at["test", "recall"] * n)
    add(("overall", "precision (Keras micro, 0.5)"), res.at["test", "precision"], tp,
        round(tp / res.at["test", "precision"]))
    add(("overall", "recall (Keras micro, 0.5)"), res.at["test", "recall"], tp, n)
    for metric in ("precision", "recall", "specificity", "F1"):
        add(("overall", f"macro {metric}"), m[f"macro_{metric.lower()}"])
    add(("overall", "loss (cross-entropy, smoothing 0.12)"), res.at["test", "loss"])
    n_c = int(cm[0].sum())
    add(("COVID-19 (test)", "accuracy"), res.at["COVID-19 (test)", "accuracy"],
        round(res.at["COVID-19 (test)", "accuracy"] * n_c), n_c)
    tp_c = round(res.at["COVID-19 (test)", "recall"] * n_c)
    add(("COVID-19 (test)", "precision (Keras micro, 0.5)"), res.at["COVID-19 (test)", "precision"], tp_c,
        round(tp_c / res.at["COVID-19 (test)", "precision"]))
    add(("COVID-19 (test)", "recall (Keras micro, 0.5)"), res.at["COVID-19 (test)", "recall"], tp_c, n_c)
    add(("COVID-19 (test)", "loss (cross-entropy, smoothing 0.12)"), res.at["COVID-19 (test)", "loss"])
    actual, predicted, tp_k = cm.sum(1), cm.sum(0), np.diag(cm)
    for j, label in enumerate(CLASSES):
        neg = n - actual[j]
        add((label, "precision"), m["precision"][j], tp_k[j], predicted[j])
        add((label, "recall"), m["recall"][j], tp_k[j], actual[j])
        add((label, "specificity"), m["specificity"][j], neg - (predicted[j] - tp_k[j]), neg)
        add((label, "F1"), m["f1"][j])
        add((label, "mean p(true class)"), tcp.at[label, "mean"], lo=tcp.at[label, "ci_low"],
            hi=tcp.at[label, "ci_high"])
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["group", "figure"])
    return out


def _report_figures(report: Report) -> pd.DataFrame:
    """Return a report's figures indexed like :func:`_paper_figures` (estimate, ci_low, ci_high)."""
    cols = ["estimate", "ci_low", "ci_high"]
    parts = {("overall", k): v for k, v in report.overall[cols].iterrows()}
    parts.update({("COVID-19 (test)", k): v for k, v in report.covid_subset[cols].iterrows()})
    parts.update({(lab, met): v for (lab, met), v in report.per_class[cols].iterrows()})
    for lab, v in report.true_class_probability[cols].iterrows():
        parts[(lab, "mean p(true class)")] = v
    out = pd.DataFrame.from_dict(parts, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["group", "figure"])
    return out


def compare_with_paper(reports: Mapping[str, Report], confidence: float = 0.95) -> pd.DataFrame:
    """Return the paper's figures next to each run's, each with its interval.

    Columns: ``published``, ``published_low``, ``published_high`` (the paper's figure; Wilson on the
    paper's counts, image-level since the paper has no patient ids; its own interval for Table 4), then
    per run ``<name>``,
    ``<name>_low``, ``<name>_high`` (bootstrap over patients) and ``published in <name> CI`` (does the
    paper's figure fall inside our interval?). Rows: index ``(group, figure)``, e.g.
    ``("overall", "accuracy")``, ``("COVID-19 (test)", "recall (Keras micro, 0.5)")``, ``("Normal", "recall")``.
    """
    table = _paper_figures(confidence)
    for name, rep in reports.items():
        ours = _report_figures(rep)
        table = table.join(ours.rename(columns={"estimate": name, "ci_low": f"{name}_low",
                                                "ci_high": f"{name}_high"}), how="outer")
        inside = (table["published"] >= table[f"{name}_low"]) & (table["published"] <= table[f"{name}_high"])
        table[f"published in {name} CI"] = inside.where(table["published"].notna() & table[f"{name}_low"].notna())
    order = ["overall", "COVID-19 (test)", *CLASSES]
    return table.sort_index(key=lambda idx: idx.map(order.index) if idx.name == "group" else idx.map(_fig_rank))


_FIGURE_ORDER = ["accuracy", "precision (Keras micro, 0.5)", "recall (Keras micro, 0.5)", "macro precision",
                 "macro recall", "macro specificity", "macro F1", "macro AUC (one-vs-rest)",
                 "loss (cross-entropy, smoothing 0.12)", "expected calibration error", "precision", "recall",
                 "specificity", "F1", "AUC", "mean p(true class)"]


def _fig_rank(name: str) -> int:
    return _FIGURE_ORDER.index(name) if name in _FIGURE_ORDER else len(_FIGURE_ORDER)


def format_comparison(table: pd.DataFrame, names: Sequence[str], digits: int = 3) -> pd.DataFrame:
    """Return :func:`compare_with_paper`'s table as text: ``figure [low, high]`` per column, and yes/no."""
    out = pd.DataFrame(index=table.index)
    cols = ["published", "published_low", "published_high"]
    out["published"] = [interval_text(*r, digits=digits) for r in table[cols].to_numpy()]
    for name in names:
        cols = [name, f"{name}_low", f"{name}_high"]
        out[name] = [interval_text(*r, digits=digits) for r in table[cols].to_numpy()]
        inside = table[f"published in {name} CI"]
        out[f"published in {name} CI"] = ["" if pd.isna(v) else ("yes" if v else "no") for v in inside]
    return out


def paired_comparison(
    df_a: pd.DataFrame, df_b: pd.DataFrame, names: tuple[str, str] = ("A", "B"),
    n_boot: int = 2000, seed: int = 0, confidence: float = 0.95,
) -> pd.Series:
    """Compare two runs' predictions on the same test images.

    Rows are matched on ``path``; both tables must hold the same images (same labels).

    Returns:
        A Series: images, units (patient groups), the four agreement counts, accuracy of each run,
        the difference ``B - A`` with its paired bootstrap interval over patient groups (both runs
        resampled with the same draws), the share of replicates where B beats A, and McNemar's exact p.

    Raises:
        PredictionsError: the two tables do not hold the same images or labels.
    """
    a, b = validate_predictions(df_a), validate_predictions(df_b)
    if set(a["path"]) != set(b["path"]):
        raise PredictionsError(
            f"{names[0]} and {names[1]} were evaluated on different images ({len(a)} vs {len(b)}, "
            f"{len(set(a['path']) ^ set(b['path']))} not shared); predict the same test split with both runs."
        )
    m = a.merge(b, on="path", suffixes=("_a", "_b"))
    if (m["label_a"] != m["label_b"]).any():
        raise PredictionsError(f"{names[0]} and {names[1]} give different labels to the same image; "
                               "both must come from the same manifest.")
    frame = pd.DataFrame({"path": m["path"], "split_group": m["split_group_a"]})
    codes, unit = resampling_groups(frame)
    y = true_labels(m.rename(columns={"label_a": "label"}))
    pa = m[[f"{c}_a" for c in PROB_COLUMNS]].to_numpy(dtype=np.float64).argmax(axis=1)
    pb = m[[f"{c}_b" for c in PROB_COLUMNS]].to_numpy(dtype=np.float64).argmax(axis=1)
    ca, cb = pa == y, pb == y
    w = bootstrap_weights(codes, n_boot, seed)
    diff = (w @ (cb.astype(float) - ca.astype(float))) / w.sum(axis=1)
    lo, hi = percentiles(diff[:, None], confidence)
    test = mcnemar_exact(ca, cb)
    na, nb = names
    return pd.Series({
        "images": len(m), "resampled": unit,
        "both right": int((ca & cb).sum()), f"only {na} right": int(test["only_a"]),
        f"only {nb} right": int(test["only_b"]), "both wrong": int((~ca & ~cb).sum()),
        f"accuracy {na}": ca.mean(), f"accuracy {nb}": cb.mean(),
        f"difference ({nb} - {na})": cb.mean() - ca.mean(), "difference ci_low": float(lo[0]),
        "difference ci_high": float(hi[0]), f"share of replicates where {nb} > {na}": float((diff > 0).mean()),
        "McNemar exact p": test["p_value"],
    }, name=f"{nb} vs {na}")


def runs_table(folders: Mapping[str, str | os.PathLike[str]], n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per run folder of ``results/`` (name -> folder): what it reached, with intervals.

    Columns: validation accuracy; test accuracy, test recall per class and test macro AUC, each as
    ``estimate [low, high]`` (95 % bootstrap over patient groups, :func:`cxr_utils.evaluate.evaluate_predictions`);
    image size, epochs, the kept epoch (1-based), parameters and the median seconds per epoch.
    Reads only ``metrics.json`` and ``predictions_test.csv``.
    """
    rows = {}
    for name, folder in folders.items():
        folder = Path(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        test = evaluate_predictions(load_predictions(folder / "predictions_test.csv"), n_boot=n_boot, seed=seed)
        row = {"val accuracy": round(metrics["val"]["accuracy"], 3)}
        cells = [("test accuracy", test.overall.loc["accuracy"])]
        cells += [(f"test recall {c}", test.per_class.loc[(c, "recall")]) for c in CLASSES]
        cells.append(("test macro AUC", test.overall.loc["macro AUC (one-vs-rest)"]))
        for key, r in cells:
            row[key] = interval_text(r["estimate"], r["ci_low"], r["ci_high"])
        row.update({"image size": metrics["image_size"], "epochs": metrics["epochs_run"],
                    "best epoch": metrics["best_epoch"] + 1, "params": metrics["params"],
                    "s/epoch (median)": round(metrics["seconds_per_epoch"])})
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("run")


def reproduction(run_dir: str | os.PathLike[str], committed_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Did a run reproduce the committed one? Its figures next to the committed folder's, and their differences.

    Compares a run folder (``runs/<name>``) with the committed record of the same recipe (``results/<name>``):
    the kept epoch, validation and test accuracy, test recall per class (from ``metrics.json``), and, image by
    image on the test split, the largest difference of any probability and how many images are called
    differently (from ``predictions_test.csv``, both written with the same printed digits).

    Returns:
        One row per figure: ``committed``, ``this run``, ``difference`` (this run minus committed);
        ``table.attrs["reproduced"]`` is True when every test probability is the same to its printed digits
        (then every figure is the same too), and ``attrs["images"]`` the number of test images compared.

    Raises:
        ValueError: the two folders hold different recipes, or predictions for different test images.
    """
    run_dir, committed_dir = Path(run_dir), Path(committed_dir)
    mine, theirs = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, committed_dir))
    if mine["recipe"] != theirs["recipe"]:
        raise ValueError(f"{run_dir} holds recipe {mine['recipe']!r}, {committed_dir} {theirs['recipe']!r}")
    a = load_predictions(committed_dir / "predictions_test.csv").set_index("path")
    b = load_predictions(run_dir / "predictions_test.csv").set_index("path")
    if set(a.index) != set(b.index):
        raise ValueError(f"{run_dir} and {committed_dir} predict different test images "
                         f"({len(set(a.index) ^ set(b.index))} differ): another data set or split")
    b = b.loc[a.index]
    pa, pb = a[list(PROB_COLUMNS)].to_numpy(), b[list(PROB_COLUMNS)].to_numpy()

    def figures(m: dict) -> dict[str, float]:
        out = {"kept epoch": m["best_epoch"] + 1, "val accuracy": m["val"]["accuracy"],
               "test accuracy": m["test"]["accuracy"]}
        out.update({f"test recall {c}": m["test"]["recall"][c] for c in CLASSES})
        return out

    rows = {k: {"committed": v, "this run": figures(mine)[k]} for k, v in figures(theirs).items()}
    rows["largest test probability difference"] = {"committed": 0.0, "this run": float(np.abs(pa - pb).max())}
    rows["test images called differently"] = {"committed": 0, "this run": int((pa.argmax(1) != pb.argmax(1)).sum())}
    table = pd.DataFrame(rows).T
    table["difference"] = table["this run"] - table["committed"]
    table.attrs.update(reproduced=bool(np.array_equal(pa, pb)), images=len(a))
    return table


def within_intervals(run_dir: str | os.PathLike[str], reference_dir: str | os.PathLike[str], n_boot: int = 2000,
                     seed: int = 0, confidence: float = 0.95) -> pd.DataFrame:
    """Are one run's test figures inside the intervals of another's? (e.g. a mixed-precision run against float32)

    Reads each folder's ``predictions_test.csv``; the reference's intervals are the bootstrap over patient groups of
    :func:`cxr_utils.evaluate.evaluate_predictions`. One row per figure (test accuracy, recall per class):
    ``reference`` (estimate [low, high]), ``run`` (its estimate) and ``inside`` (True when the run's estimate lies
    in the reference's interval).
    """
    ref = evaluate_predictions(load_predictions(Path(reference_dir) / "predictions_test.csv"), n_boot=n_boot, seed=seed,
                               confidence=confidence)
    run = evaluate_predictions(load_predictions(Path(run_dir) / "predictions_test.csv"), n_boot=n_boot, seed=seed,
                               confidence=confidence)
    cells = [("test accuracy", ("overall", "accuracy"))] + [(f"test recall {c}", ("per_class", (c, "recall")))
                                                           for c in CLASSES]
    rows = {}
    for name, (part, key) in cells:
        r, m = getattr(ref, part).loc[key], getattr(run, part).loc[key]
        rows[name] = {"reference": interval_text(r["estimate"], r["ci_low"], r["ci_high"]),
                      "run": round(float(m["estimate"]), 3),
                      "inside": bool(r["ci_low"] <= m["estimate"] <= r["ci_high"])}
    return pd.DataFrame(rows).T
