"""Shared fixtures: the real offline mirror, and one fetched + curated data folder per test session.

The tests read the real data, never invented stand-ins: ``CXR_DATA_MIRROR`` must name the offline
mirror of the four sources (CI sets it to ``../shared/cxr-mirror``). Lessons executed by the tests
(papermill, nbval) inherit ``CXR_SMOKE=1`` and the session's ``CXR_DATA_DIR``, and draw their figures
with the kernel's inline backend, as they do for a learner.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import papermill as pm
import pytest

os.environ["CXR_SMOKE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def _mirror() -> Path:
    value = os.environ.get("CXR_DATA_MIRROR", "")
    if not value or not Path(value).is_dir():
        pytest.exit(
            "The tests need the offline data mirror: set CXR_DATA_MIRROR to its folder "
            "(e.g. CXR_DATA_MIRROR=../shared/cxr-mirror), or run `python3 tools/course.py test --mirror DIR`.",
            returncode=2,
        )
    return Path(value).resolve()


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror of the four sources (read-only: never write into it)."""
    return _mirror()


@pytest.fixture(scope="session")
def curated_data_dir(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> Path:
    """A data root fetched from the mirror and curated with the real commands, once per session.

    Sets ``CXR_DATA_DIR`` for the rest of the session, so notebooks run by the tests use it too.
    """
    root = tmp_path_factory.mktemp("cxr-data")
    env = {**os.environ, "CXR_DATA_DIR": str(root), "CXR_DATA_MIRROR": str(mirror)}
    for step in (["fetch"], ["curate"]):
        proc = subprocess.run([sys.executable, "-m", "cxr_utils.cli", *step], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"cxr-data {step[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    os.environ["CXR_DATA_DIR"] = str(root)
    return root


class LessonRun:
    """An executed lesson: the notebook, its printed text (runs of blanks folded to one) and figures."""

    def __init__(self, nb: nbformat.NotebookNode):
        self.nb = nb
        parts = []
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                parts.append(out.get("text", ""))
                parts.append(out.get("data", {}).get("text/plain", ""))
        self.text = re.sub(r"[ \t]+", " ", "\n".join(parts))  # printed tables' column widths vary
        self.figures = sum(
            any(k in out.get("data", {}) for k in ("image/png", "image/jpeg"))
            for cell in nb.cells for out in cell.get("outputs", [])
        )


@pytest.fixture()
def run_lesson(tmp_path: Path) -> Callable[..., LessonRun]:
    """Execute ``notebooks/<name>`` with papermill at smoke parameters (plus ``parameters``)."""

    def run(name: str, **parameters) -> LessonRun:
        notebook = REPO / "notebooks" / name
        out = tmp_path / name
        pm.execute_notebook(str(notebook), str(out), parameters={"smoke": True, **parameters},
                            cwd=str(notebook.parent), kernel_name="python3", progress_bar=False)
        return LessonRun(nbformat.read(out, as_version=4))

    return run
