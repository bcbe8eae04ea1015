"""Lesson 02 (augmentation) runs end to end under papermill at smoke parameters on the curated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "02_augmentation.ipynb"


@pytest.mark.notebook
def test_lesson_02_runs_in_smoke_mode_and_shows_the_paper_contrast_cut(curated_data_dir, tmp_path):
    import papermill as pm

    out = tmp_path / NOTEBOOK.name
    pm.execute_notebook(str(NOTEBOOK), str(out), parameters={"smoke": True}, cwd=str(NOTEBOOK.parent),
                        kernel_name="python3", progress_bar=False)
    nb = json.loads(out.read_text())
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                   for o in c.get("outputs", []))
    assert "reads 96 px, returns 80 px" in text
    # the measured ratio of test to paper-augmented per-image contrast is printed, and it is large
    ratio = float(text.split("(ratio ")[1].split("x)")[0])
    assert ratio > 3
