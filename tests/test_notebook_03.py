"""Lesson 03 (architecture) runs end to end in smoke mode and states the paper's parameter count."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_architecture.ipynb"


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.notebook
def test_notebook_03_builds_both_models_and_times_the_small_one_in_smoke_mode(tmp_path):
    out = tmp_path / "03_architecture.ipynb"
    pm.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters={"smoke": True},
        cwd=str(NOTEBOOK.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    text = _outputs_text(nb)
    assert "paper_dcnn at 80x80x3: 63,148,835 parameters" in text
    assert "efficient_cnn" in text and "images/s" in text
    assert "total: 406.9 M multiply-adds per 80x80 image" in text
    # The shift demonstration: global max pooling features move less than the flattened map.
    gmp = float(re.search(r"global max pooling features: ([0-9.]+)", text).group(1))
    flat = float(re.search(r"flattened features: +([0-9.]+)", text).group(1))
    assert gmp < flat
