"""Lesson 05 (learning-rate schedules, range test) runs end to end in smoke mode on the curated data."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "05_lr_schedules.ipynb"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return re.sub(r"[ \t]+", " ", "\n".join(parts))  # column widths of printed tables may vary


@pytest.mark.notebook
def test_notebook_05_tabulates_schedules_reloads_one_and_runs_a_range_test_in_smoke_mode(tmp_path, curated_data_dir):
    out = tmp_path / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={"smoke": True}, cwd=str(NOTEBOOK.parent),
                        kernel_name="python3", progress_bar=False)
    nb = nbformat.read(out, as_version=4)
    text = _outputs_text(nb)
    # the script's rate changes between the last batch of epoch 2 and the first of epoch 3
    assert "step 527 (epoch 2): script 4.00e-04" in text
    assert "step 528 (epoch 3): script 2.00e-04" in text
    assert "schedule after reload: EpochStepDecay" in text
    assert "steps run; stopped on divergence:" in text
    assert "chosen peak rate:" in text
