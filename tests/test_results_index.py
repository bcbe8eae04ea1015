"""``results/`` says what it holds: every committed run folder is named after the recipe that reproduces it,
and ``results/README.md`` lists it with what produced it and from which commit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cxr_utils import CLASSES, runs, train

RESULTS = Path(__file__).resolve().parents[1] / "results"
CONFIGS = sorted(RESULTS.rglob(runs.CONFIG_FILE))
TASKS = [p.parent for p in CONFIGS if "task" in json.loads(p.read_text())]
"""Runs of another task than the three classes (lesson 08's source prediction): not a recipe's run folder."""
ALL_FOLDERS = [p.parent for p in CONFIGS if p.parent not in TASKS]
PRECISION = [p for p in ALL_FOLDERS if p.parent.name == "precision"]
"""Lesson 06's pair of short runs that differ only in their precision policy: named for the run, not the recipe."""
FOLDERS = [p for p in ALL_FOLDERS if p not in PRECISION]
ALLOWED = {"description", "notes", "trained_as", "data", "deterministic", "extra_train", "precision", "strategy"}
"""Keys that may differ from the recipe's resolved config: words, provenance (the data's fingerprint, the precision
and the devices a run computed with), and later additions (a run trained before a key existed has none)."""


def test_results_holds_the_run_folders_the_course_reports():
    names = {p.name for p in FOLDERS}
    assert {"paper", "improved", "improved_v1", "improved_paper_augment", "paper_selected_on_val_loss"} <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(p.relative_to(RESULTS)) for p in FOLDERS])
def test_each_run_folder_names_the_recipe_that_reproduces_its_config(folder: Path):
    config = json.loads((folder / runs.CONFIG_FILE).read_text())
    metrics = json.loads((folder / runs.METRICS_FILE).read_text())
    assert config["recipe"] == metrics["recipe"] == folder.name
    resolved = json.loads(json.dumps(train.resolve_config(folder.name, subset=config["subset"], seed=config["seed"])))
    differs = {k for k in config.keys() | resolved.keys() if config.get(k) != resolved.get(k)}
    assert differs <= ALLOWED, (folder.name, differs)
    if "trained_as" in config:  # trained under a working name, renamed after: metrics says the same
        assert metrics["trained_as"] == config["trained_as"] != folder.name


@pytest.mark.parametrize("folder", PRECISION, ids=[p.name for p in PRECISION])
def test_each_precision_run_is_the_improved_recipe_shortened_with_the_policy_its_name_says(folder: Path):
    config = json.loads((folder / runs.CONFIG_FILE).read_text())
    environment = json.loads((folder / runs.ENVIRONMENT_FILE).read_text())
    assert config["recipe"] == "improved" and folder.name == f"improved-5ep-64px-{config['precision']}"
    assert environment["precision"] == config["precision"]  # what the run computed in, not only what was asked
    resolved = json.loads(json.dumps(train.resolve_config("improved", epochs=5, image_size=64)))
    differs = {k for k in config.keys() | resolved.keys() if config.get(k) != resolved.get(k)}
    assert differs <= ALLOWED, (folder.name, differs)


def test_the_source_prediction_run_is_the_one_lesson_08_trains_and_is_listed(curated_data_dir):
    """Its config is lesson 08's ``shortcuts.source_config()``, on the manifest the curation writes from the mirror."""
    from cxr_utils import shortcuts

    assert [p.relative_to(RESULTS).as_posix() for p in TASKS] == ["lesson08/source_prediction"]
    config = json.loads((TASKS[0] / runs.CONFIG_FILE).read_text())
    assert config == json.loads(json.dumps(shortcuts.source_config(64, 8, 0, None)))
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    assert sum("`lesson08/source_prediction/`" in line for line in index.splitlines() if line.startswith("|")) == 1


def test_the_precision_pair_exists_and_differs_only_in_policy():
    assert sorted(p.name for p in PRECISION) == ["improved-5ep-64px-float32", "improved-5ep-64px-mixed_bfloat16"]


@pytest.mark.parametrize("folder", ALL_FOLDERS, ids=[str(p.relative_to(RESULTS)) for p in ALL_FOLDERS])
def test_the_results_index_lists_each_folder_with_its_commit(folder: Path):
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    commit = json.loads((folder / runs.ENVIRONMENT_FILE).read_text())["git_commit"]
    rel = folder.relative_to(RESULTS).as_posix()
    rows = [line for line in index.splitlines() if line.startswith("|") and f"`{rel}/`" in line]
    assert len(rows) == 1, f"results/README.md must have one table row for `{rel}/`"
    assert re.search(rf"`{commit}`", rows[0]), f"the row of {rel} must name the commit {commit} it was trained from"


@pytest.mark.parametrize("folder", ALL_FOLDERS, ids=[str(p.relative_to(RESULTS)) for p in ALL_FOLDERS])
def test_metrics_json_is_what_the_one_metrics_implementation_computes_from_the_predictions(folder: Path):
    """The committed figures are those cxr_utils.metrics.summary gives on the committed predictions. Counts and
    ratios of counts exactly; the cross-entropy to 1e-5, since the run computed it before the probabilities
    were written with six digits."""
    from cxr_utils import metrics, predictions

    committed = json.loads((folder / runs.METRICS_FILE).read_text())
    for split in ("val", "test"):
        again = metrics.summary(predictions.load_predictions(folder / f"predictions_{split}.csv"))
        old = committed[split]
        assert again["confusion"] == old["confusion"] and again["n"] == old["n"]
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            assert again[key] == pytest.approx(old[key], abs=1e-12), (split, key)
        for key in ("recall", "precision"):
            for c, value in again[key].items():
                if value is None:  # undefined (a class never predicted); the runs wrote scikit-learn's 0 for it
                    column = CLASSES.index(c)
                    assert key == "precision" and sum(row[column] for row in old["confusion"]) == 0
                    assert old[key][c] == 0.0
                else:
                    assert value == pytest.approx(old[key][c], abs=1e-12), (split, key, c)
        assert again["cross_entropy"] == pytest.approx(old["cross_entropy"], rel=1e-5), split
