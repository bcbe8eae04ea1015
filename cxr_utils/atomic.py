"""Files that are never half-written: write to a temporary file beside the target, then rename.

A rename within one folder is atomic, so a reader sees the old file or the new one, never a mix,
and a failure (an exception, Ctrl-C, a full disk) leaves the old file as it was and no temporary
file behind. Every file the course must not leave half-written goes through :func:`replacing`
(or the small writers built on it): the manifest and curation reports, run folders, caches,
fetched files, committed lessons.

    with atomic.replacing(path) as tmp:      # any writer that needs a path
        np.savez(tmp, images=images)
    atomic.write_text(path, text)
    atomic.write_json(path, {"complete": True})
    atomic.write_csv(path, frame)
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def temporary_name(path: Path, suffix: str | None = None) -> Path:
    """Return the temporary file ``path`` is written under, beside it.

    By default ``.<stem>.<pid>.tmp<ext>``: hidden, unique to this process (two processes writing the same
    file never share a temporary file), and ending in the target's extension, which some writers insist
    on (``model.save`` wants ``.keras``, ``np.savez`` adds ``.npz`` otherwise). A ``suffix`` (``".part"``
    for fetched files) gives the fixed, documented name ``<name><suffix>`` instead.
    """
    path = Path(path)
    if suffix:
        return path.with_name(path.name + suffix)
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], suffix: str | None = None, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, rename it to ``path``.

    The parent folder is created. On any exception (``KeyboardInterrupt`` included) the temporary
    file is removed and ``path`` is left untouched. With ``fsync`` the bytes reach the disk before
    the rename, so a crash cannot leave an empty file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sync(path: str | os.PathLike[str]) -> None:
    """Force a file written without ``fsync`` (:func:`replacing` with ``fsync=False``) onto the disk now."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def move_into_place(tmp: str | os.PathLike[str], path: str | os.PathLike[str], fsync: bool = True) -> Path:
    """Rename a finished temporary file ``tmp`` (beside ``path``) to ``path``, for writers that manage ``tmp``
    themselves (a resumable download keeps its ``.part`` between attempts). Returns ``path``."""
    if fsync:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return ``path``."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; return ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return value.as_posix()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def to_json(obj: Any) -> str:
    """Return ``obj`` as the indented JSON text the course writes (NumPy numbers and paths allowed)."""
    return json.dumps(obj, indent=2, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (see :func:`to_json`) to ``path`` atomically; return ``path``."""
    return write_text(path, to_json(obj))


def write_csv(path: str | os.PathLike[str], frame: pd.DataFrame, float_format: str | None = None) -> Path:
    """Write ``frame`` (without its index, ``\\n`` line ends) to ``path`` atomically; return ``path``.

    ``float_format`` as in :meth:`pandas.DataFrame.to_csv` (run folders use ``"%.6g"``).
    """
    return write_text(path, frame.to_csv(index=False, lineterminator="\n", float_format=float_format))
