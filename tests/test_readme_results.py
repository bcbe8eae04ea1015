"""The README's Results table says what the committed results say.

Every figure in the table (accuracy and per-class recall with their 95 % patient-bootstrap intervals
and counts, parameters, seconds per epoch) is recomputed from ``results/<run>/`` and compared with
the text, so the README cannot drift from the runs it describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cxr_utils import CLASSES, metrics
from cxr_utils import evaluate as ev

REPO = Path(__file__).resolve().parents[1]
COLUMNS = {"paper": 2, "improved": 3, "improved_v1": 4}  # run -> column of the table (0 is the row name)


def _table(readme: Path = REPO / "README.md") -> dict[str, list[str]]:
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0]: cells for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows)}


@pytest.fixture(scope="module")
def table() -> dict[str, list[str]]:
    return _table()


@pytest.mark.parametrize("run", sorted(COLUMNS))
def test_accuracy_and_recalls_with_their_intervals_match_the_committed_predictions(table, run):
    df = pd.read_csv(REPO / "results" / run / "predictions_test.csv")
    report = ev.evaluate_predictions(df, n_boot=2000, seed=0)
    col = COLUMNS[run]
    acc = report.overall.loc["accuracy"]
    assert table["test accuracy"][col] == metrics.interval_text(acc["estimate"], acc["ci_low"], acc["ci_high"])
    for c in CLASSES:
        r = report.per_class.loc[(c, "recall")]
        expected = f"{metrics.interval_text(r['estimate'], r['ci_low'], r['ci_high'])} ({r['k']:.0f}/{r['n']:.0f})"
        assert table[f"recall {c}"][col] == expected, (run, c)


@pytest.mark.parametrize("run", sorted(COLUMNS))
def test_parameters_and_seconds_per_epoch_match_the_committed_metrics(table, run):
    metrics = json.loads((REPO / "results" / run / "metrics.json").read_text())
    paper = json.loads((REPO / "results" / "paper" / "metrics.json").read_text())
    params, seconds = table["parameters"][COLUMNS[run]], table["seconds per epoch"][COLUMNS[run]]
    assert params.startswith(f"{metrics['params']:,}")
    assert re.match(rf"{round(metrics['seconds_per_epoch'])}\b", seconds)
    if run != "paper":
        assert f"({metrics['params'] / paper['params']:.2%})".replace("%", " %") in params
        assert f"{paper['seconds_per_epoch'] / metrics['seconds_per_epoch']:.1f}x faster" in seconds


def test_a_changed_figure_in_the_readme_is_read_back_changed(tmp_path):
    """The reader picks the right cell: change one run's accuracy in a copy and only that cell differs."""
    readme, original = tmp_path / "README.md", _table()
    cell = original["test accuracy"][COLUMNS["improved"]]
    changed = cell.replace(cell[:5], f"{float(cell[:5]) + 0.1:.3f}", 1)
    text = (REPO / "README.md").read_text(encoding="utf-8")
    readme.write_text(text.replace(f"| {cell} |", f"| {changed} |", 1), encoding="utf-8")
    again = _table(readme)
    assert again["test accuracy"][COLUMNS["improved"]] == changed != cell
    assert again["test accuracy"][COLUMNS["paper"]] == original["test accuracy"][COLUMNS["paper"]]


def test_the_external_figures_match_the_committed_external_predictions():
    """The README's adult-Normals-called-COVID-19 counts are those of ``results/<run>/predictions_external.csv``
    (lesson 07 writes that file into each run folder; the export copies it)."""
    from cxr_utils import predictions

    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`improved` calls (\d+) COVID-19 \(`paper` (\d+)\)", text)
    assert found, "the README's Results must say how many external Normals each recipe calls COVID-19"
    for run, stated in zip(("improved", "paper"), found.groups(), strict=True):
        df = predictions.load_predictions(REPO / "results" / run / "predictions_external.csv")
        assert len(df) == 600 and (df["label"] == "Normal").sum() == 300
        called = predictions.predicted(df)
        normals_called_covid = int(((df["label"] == "Normal").to_numpy() & (called == 0)).sum())
        assert int(stated) == normals_called_covid, run


def _lesson08_rows() -> dict[str, str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### What the models learned (lesson 08)", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| ") and "---" not in line]
    return {cells[0]: cells[2] for cells in rows[1:]}


def test_lesson_08_shortcut_figures_are_those_of_the_committed_runs():
    from cxr_utils import predictions, shortcuts

    rows = _lesson08_rows()
    for name, label in (("control_64", "whole images (`control_64`)"), ("lungs_hidden", "(`lungs_hidden`)"),
                        ("border_only", "(`border_only`)")):
        df = predictions.load_predictions(REPO / "results" / "lesson08" / name / "predictions_test.csv")
        a = ev.evaluate_predictions(df, n_boot=2000, seed=0).overall.loc["accuracy"]
        row = next(v for k, v in rows.items() if k.endswith(label))
        assert row == metrics.interval_text(a["estimate"], a["ci_low"], a["ci_high"]), name
    source = pd.read_csv(REPO / "results" / "lesson08" / "source_prediction" / "predictions_test.csv",
                         dtype={"split_group": str})
    table = shortcuts.source_report(source, n_boot=2000, seed=0)
    acc = table.loc["accuracy"]
    row_key = next(k for k in rows if "source collection" in k)
    assert rows[row_key] == metrics.interval_text(acc["estimate"], acc["ci_low"], acc["ci_high"])
    chance = table.loc["chance (always the largest source)", "estimate"]
    assert f'(always "Kaggle": {chance:.3f})' in (REPO / "README.md").read_text(encoding="utf-8")


def test_lesson_08_deconfounding_figures_are_those_of_the_committed_predictions(external_dir):
    from cxr_utils import external, predictions

    rows = _lesson08_rows()
    lesson08 = REPO / "results" / "lesson08"
    files = {"improved": REPO / "results" / "improved", "deconfounded": lesson08 / "deconfounded",
             "control_64": lesson08 / "control_64", "deconfounded_64": lesson08 / "deconfounded_64"}
    frames = {run: predictions.load_predictions(folder / "predictions_external.csv") for run, folder in files.items()}
    table = external.kept_calls(frames, external_dir)
    for run in files:
        for what in ("kept adult Normals", "external COVID-19"):
            row = table.loc[(f"{what} called COVID-19", run)]
            key = next(key for key in rows if key.startswith(f"`{run}`") and what in key)
            expected = f"{metrics.interval_text(row.share, row.wilson_low, row.wilson_high)} ({row.k:.0f}/{row.n:.0f})"
            assert rows[key] == expected, (run, what)
