"""Lesson 04 (loss, label smoothing, class weights) runs end to end in smoke mode on the curated data."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_loss_and_label_smoothing.ipynb"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return re.sub(r"[ \t]+", " ", "\n".join(parts))  # column widths of printed tables may vary


@pytest.mark.notebook
def test_notebook_04_compares_smoothing_schemes_trains_twice_and_weighs_classes_in_smoke_mode(
    tmp_path, curated_data_dir
):
    out = tmp_path / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={"smoke": True}, cwd=str(NOTEBOOK.parent),
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = _outputs_text(nb)
    # the two smoothing schemes, and formula (3)'s minimum at the uniform prediction
    assert "Keras, eps=0.12 (script) 0.92 0.04 0.04" in text
    assert "paper formula (2), eps=0.12 0.88 0.06 0.06" in text
    assert "paper's formula (3), eps=0.12 q = 0.33" in text
    # both short trainings ran (one fit log each) and the class-weight table came from the manifest
    assert text.count("label_smoothing=0.0:") == 1 and text.count("label_smoothing=0.12:") == 1
    assert "our curated training split (manifest)" in text
