"""Where the course keeps its data, caches and runs.

Everything that is downloaded or computed lives outside git, under two roots:

- ``CXR_DATA_DIR`` (default: the repository's ``data/``): ``raw/`` holds the sources in their
  upstream layout, ``curated/`` the manifest and curation reports, ``cache/`` decoded arrays.
- ``CXR_RUNS_DIR`` (default: the repository's ``runs/``): training runs and executed notebooks.

``CXR_DATA_MIRROR`` names a local copy of the upstream sources to read instead of the network, and
``CXR_EXTERNAL_DIR`` the external collection lessons 07 and 08 test on (the COVID-19 Radiography
Database images of ``shared/cxr-external``).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
_IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser().resolve() if value else None


def data_dir() -> Path:
    """Return the data root: ``$CXR_DATA_DIR``, else ``<repo>/data`` (``~/cxr-course/data`` outside a checkout)."""
    return _env_path("CXR_DATA_DIR") or (
        REPO_ROOT / "data" if _IN_CHECKOUT else Path.home() / "cxr-course" / "data"
    )


def raw_dir(root: Path | None = None) -> Path:
    """Return the folder holding each source in its upstream layout (``<data>/raw``)."""
    return (root or data_dir()) / "raw"


def curated_dir(root: Path | None = None) -> Path:
    """Return the folder with the manifest and the curation reports (``<data>/curated``)."""
    return (root or data_dir()) / "curated"


def manifest_path(root: Path | None = None) -> Path:
    """Return the path of the one manifest every lesson reads (``<data>/curated/manifest.csv``)."""
    return curated_dir(root) / "manifest.csv"


def cache_dir(root: Path | None = None) -> Path:
    """Return the folder for decoded-image caches (``<data>/cache``)."""
    return (root or data_dir()) / "cache"


def runs_dir() -> Path:
    """Return the root for training runs and executed notebooks: ``$CXR_RUNS_DIR``, else ``<repo>/runs``."""
    return _env_path("CXR_RUNS_DIR") or (
        REPO_ROOT / "runs" if _IN_CHECKOUT else Path.home() / "cxr-course" / "runs"
    )


def mirror_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the local mirror to read instead of the network, or ``None`` for the real upstream.

    ``explicit`` (a ``--mirror`` option) wins over the ``CXR_DATA_MIRROR`` environment variable.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    return _env_path("CXR_DATA_MIRROR")


def external_dir() -> Path | None:
    """Return the external test collection (``$CXR_EXTERNAL_DIR``), or ``None`` when it is not set."""
    return _env_path("CXR_EXTERNAL_DIR")


class UnsafePathError(ValueError):
    """A file name from a metadata file or listing points outside the folder it must stay in."""


def safe_join(base: Path, relative: str) -> Path:
    """Join ``relative`` (a name read from a metadata file or listing) onto ``base``, refusing escapes.

    Refused, before anything is opened: absolute paths, drive letters, ``..`` components, and
    paths that resolve outside ``base`` through a symbolic link.

    Returns:
        The joined path (not resolved; it need not exist).

    Raises:
        UnsafePathError: naming the offending value and the folder it had to stay in.
    """
    text = str(relative).replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if "\x00" in text:
        raise UnsafePathError(f"refused file name {relative!r}: it contains a NUL byte")
    if not text.strip() or text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts:
        raise UnsafePathError(
            f"refused file name {relative!r}: it points outside {base} (absolute path or '..'); "
            "fix or remove that entry in the metadata file"
        )
    joined = Path(base, *parts)
    real_base = Path(base).resolve()
    if not joined.resolve().is_relative_to(real_base):
        raise UnsafePathError(
            f"refused file name {relative!r}: it leads outside {base} through a symbolic link"
        )
    return joined
