"""What a lesson's setup cell does on Google Colab, after it has cloned and installed the course.

Colab brings its own TensorFlow, Keras and NumPy, usually newer than the versions the course pins and
measured its results with: :func:`version_warnings` says which differ (the lessons still run; figures
may differ in the last digits). Lessons that read images need the data, and the Kaggle part of it
needs the learner's Kaggle token: :func:`kaggle_credentials` finds one where Kaggle's tools look
(``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``~/.kaggle/kaggle.json``) or in Colab's secrets, and
:func:`prepare` says how to give one *before* a download would fail without it. Nothing here runs
outside Colab unless called.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

from cxr_utils import paths

CHECKED = ("tensorflow", "keras", "numpy", "pandas", "scikit-learn", "matplotlib")
"""The packages whose version changes figures or behaviour; compared with the pins in ``pyproject.toml``."""

KAGGLE_HELP = (
    "The Kaggle images need your Kaggle API token. On Colab: open the key icon (Secrets) in the left bar, "
    "add KAGGLE_USERNAME and KAGGLE_KEY (the two values in the kaggle.json that kaggle.com > Settings > API > "
    "Create New Token gives you), allow this notebook to read them, and run this cell again. Or upload "
    "kaggle.json to ~/.kaggle/."
)


def pinned_versions(root: Path = paths.REPO_ROOT) -> dict[str, str]:
    """The ``name==version`` pins of ``root``'s ``pyproject.toml`` dependencies, as ``{name: version}``."""
    with (Path(root) / "pyproject.toml").open("rb") as fh:
        deps = tomllib.load(fh)["project"]["dependencies"]
    return {m.group(1).lower(): m.group(2) for d in deps if (m := re.fullmatch(r"([\w.-]+)==([\w.]+)", d.strip()))}


def version_warnings(root: Path = paths.REPO_ROOT, packages: tuple[str, ...] = CHECKED) -> list[str]:
    """One line for each of ``packages`` whose installed version is not the one ``pyproject.toml`` pins.

    A package that is not installed is reported too. Empty when everything matches.
    """
    pins = pinned_versions(root)
    lines = []
    for name in packages:
        want = pins.get(name)
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if want and have != want:
            lines.append(f"{name} {have or 'is not installed'}" + (f" (the course pins {want})" if want else ""))
    return lines


def kaggle_credentials() -> str | None:
    """Where a Kaggle token is, or ``None``: the environment, ``~/.kaggle/kaggle.json``, or Colab's secrets.

    A token found in Colab's secrets (``KAGGLE_USERNAME`` and ``KAGGLE_KEY``) is copied into the
    environment, where ``kagglehub`` reads it.
    """
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return "the environment"
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    if token.is_file():
        try:
            ok = {"username", "key"} <= set(json.loads(token.read_text()))
        except (OSError, ValueError):
            ok = False
        if ok:
            return str(token)
    try:
        from google.colab import userdata  # only on Colab
    except ImportError:
        return None
    try:
        found = {name: userdata.get(name) for name in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
    except Exception:  # secret missing or access not granted: Colab raises its own error types
        return None
    os.environ.update({k: v for k, v in found.items() if v})
    return "Colab's secrets" if all(found.values()) else None


def prepare(needs_data: bool, *, show=print) -> None:
    """Set a lesson up on Colab: warn about versions, then fetch and curate the data if the lesson reads images.

    Fetching is skipped when the curated manifest already exists (a second lesson in the same Colab
    session). Without a Kaggle token (and without ``CXR_DATA_MIRROR``) it says how to give one and stops
    before downloading anything.

    Raises:
        RuntimeError: the lesson needs the data and no Kaggle token was found (the message says how to give one).
    """
    problems = version_warnings()
    if problems:
        show("Colab's versions differ from the course's pins; the lessons run, but figures may differ slightly "
             "from the committed ones: " + "; ".join(problems) + ".")
    if not needs_data:
        return
    from cxr_utils import cli

    if (paths.data_dir() / "curated" / "manifest.csv").is_file():
        show("The data is already fetched and curated in this session.")
        return
    if not paths.mirror_dir(None) and kaggle_credentials() is None:
        raise RuntimeError(KAGGLE_HELP)
    for command in (["fetch", "--quiet"], ["curate"]):
        if cli.main(command) != 0:
            raise RuntimeError(f"`cxr-data {' '.join(command)}` failed; its message is above.")
