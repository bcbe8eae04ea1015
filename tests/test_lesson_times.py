"""Each lesson's time has one source: the papermill time of its committed run, in the notebook's metadata.

The title cell states it (``**Time:** N min``, written by ``tools/notebooks.py execute``) and the README's course
map repeats it; both must say what the metadata says.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cxr_utils import lessons

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("path", lessons.lessons(), ids=lambda p: p.name)
def test_title_and_readme_state_the_committed_runs_time(path: Path) -> None:
    nb = lessons.load(path)
    measured = lessons.committed_minutes(nb)
    assert measured is not None, f"{path.name} has no papermill time: execute it with tools/notebooks.py execute"
    title = nb["cells"][0]["source"]
    stated = lessons.TIME.search("".join(title) if isinstance(title, list) else title)
    assert stated, f"{path.name}: the title cell must state '**Time:** N min' (tools/notebooks.py execute writes N)"
    assert stated.group(1) == measured, f"{path.name}: title says {stated.group(1)} min, its run took {measured}"
    row = [ln for ln in README.splitlines() if ln.startswith(f"| [{path.name[:2]} · ")]
    assert len(row) == 1, f"the README's course map has no single row for lesson {path.name[:2]}"
    last = row[0].rstrip(" |").rsplit("|", 1)[-1]
    assert re.match(r"\s*([\d.]+)", last).group(1) == measured, (
        f"README says {last.strip()!r} for {path.name}; its committed run took {measured} min")


def test_minutes_are_written_one_way() -> None:
    assert [lessons.minutes(s) for s in (21.79, 59.9, 302.7, 599.0, 600.0, 4391.0)] == [
        "0.4", "1.0", "5.0", "10.0", "10", "73"]
    nb = {"metadata": {"papermill": {"duration": 95.0}},
          "cells": [{"cell_type": "markdown", "source": "# 09 · X\n**Time:** 7 min on a 2-core CPU."}]}
    assert lessons.with_time(nb)["cells"][0]["source"] == "# 09 · X\n**Time:** 1.6 min on a 2-core CPU."
