"""Lesson 06 (training the paper's and the improved recipe) runs end to end in smoke mode on the curated data."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "06_training.ipynb"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.notebook
def test_notebook_06_trains_both_recipes_into_complete_run_folders_in_smoke_mode(tmp_path, curated_data_dir,
                                                                                  monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("CXR_RUNS_DIR", str(runs))
    out = tmp_path / NOTEBOOK.name
    results = NOTEBOOK.parents[1] / "results"
    before = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={"smoke": True}, cwd=str(NOTEBOOK.parent),
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = _outputs_text(nb)
    for name in ("paper", "improved"):
        folder = runs / f"smoke-{name}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["complete"] and metrics["recipe"] == name and metrics["epochs_run"] == 1
        assert f"--- {name}: history of" in text
    assert "epoch 1/1  loss" in text  # the compact one-line-per-epoch output
    assert "63,148,835 parameters" in text and "751,459 parameters" in text
    assert "improved / paper: 1.18%" in text
    assert "validation tags ['epoch_accuracy', 'epoch_loss'" in text
    assert "max difference reloaded vs saved probabilities" in text
    figures = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(figures) == 2  # training curves, batch-norm spread ratio
    # smoke mode never touches the committed reference results
    after = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    assert after == before
