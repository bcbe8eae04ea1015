"""Shared fixtures: the real offline mirror, and one fetched + curated data folder per test session.

The tests read the real data, never invented stand-ins: ``CXR_DATA_MIRROR`` must name the offline
mirror of the four sources (CI sets it to ``../shared/cxr-mirror``). Lessons executed by the tests
(papermill, nbval) inherit ``CXR_SMOKE=1`` and the session's ``CXR_DATA_DIR``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["CXR_SMOKE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

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
