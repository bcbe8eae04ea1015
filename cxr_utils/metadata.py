"""Each source's metadata, read into one common table.

The four sources describe their images in four different ways: Cohen et al. have a rich
``metadata.csv`` with a file name per row; Figure 1 names each file after its patient id and gives
no file name at all; Actualmed has an ``imagename`` column; the Kaggle set has no metadata and
encodes class and patient in folder and file names. :func:`records` turns each into rows with the
same columns, one per image the source describes, so that curation can apply one set of rules:

``source, path, present, patient_id, finding, view, modality, age, sex, kaggle_split, ref, problem``

``path`` is relative to ``CXR_DATA_DIR`` (posix separators), ``present`` says whether the file is
on disk, ``patient_id`` is prefixed with the source key (patient ``2`` of Cohen et al. is not patient
``2`` of another source), ``ref`` is how the source refers to the image (row number and name), and
``problem`` is non-empty when the row cannot be used as it stands (an unsafe file name, say).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import paths
from cxr_utils.images import is_image_name
from cxr_utils.sources import SOURCES, source_dir


class MetadataError(ValueError):
    """A source's metadata file cannot be read as that source writes it; the message names the file and the fix."""


COLUMNS = [
    "source", "path", "present", "patient_id", "finding", "view", "modality",
    "age", "sex", "kaggle_split", "ref", "problem",
]


def read_metadata_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """Read a metadata CSV whatever its text encoding; return the table (all strings) and the encoding.

    UTF-8 is tried first; a file that is not valid UTF-8 is read as Windows-1252, the usual
    "Latin-1" of spreadsheets (Figure 1's metadata, for instance, has ``38\\xb0`` for 38 degrees),
    and as ISO-8859-1 if even that fails (every byte is valid there).
    """
    raw = Path(path).read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    table = table.loc[:, ~table.columns.str.startswith("Unnamed:")]
    return table, encoding.replace("-sig", "")


def parse_age(text: str) -> float:
    """Return the first number in an age field (``"50+"`` -> 50, ``"early 40s"`` -> 40), else NaN."""
    match = re.search(r"\d+(?:\.\d+)?", str(text))
    return float(match.group()) if match else np.nan


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _resolve(folder: Path, name: str, root: Path) -> tuple[str, bool, str]:
    """Return (relative path, present, problem) for a file name read from metadata."""
    try:
        full = paths.safe_join(folder, name)
    except paths.UnsafePathError as exc:
        return "", False, str(exc)
    return _rel(full, root), full.is_file(), ""


def _cohen(root: Path) -> pd.DataFrame:
    base = source_dir("cohen", root)
    meta, _ = read_metadata_csv(base / SOURCES["cohen"].metadata_file)
    rows = []
    for i, r in meta.iterrows():
        rel, present, problem = _resolve(base, f"{r['folder']}/{r['filename']}", root)
        rows.append({
            "patient_id": f"cohen:{r['patientid']}", "finding": r["finding"], "view": r["view"],
            "modality": r["modality"], "age": parse_age(r["age"]), "sex": r["sex"],
            "path": rel, "present": present, "problem": problem,
            "ref": f"metadata.csv row {i + 2}: {r['folder']}/{r['filename']}",
        })
    return pd.DataFrame(rows)


def _figure1(root: Path) -> pd.DataFrame:
    base = source_dir("figure1", root)
    meta, _ = read_metadata_csv(base / SOURCES["figure1"].metadata_file)
    images = base / "images"
    on_disk = {p.stem: p for p in sorted(images.iterdir()) if is_image_name(p.name)} if images.is_dir() else {}
    rows = []
    for i, r in meta.iterrows():
        pid = r["patientid"]
        try:
            paths.safe_join(images, pid)  # the id is used as a file name: refuse escapes
            problem = ""
        except paths.UnsafePathError as exc:
            problem = str(exc)
        found = on_disk.get(pid) if not problem else None
        rows.append({
            # COVID-00003a and COVID-00003b are two images of one patient.
            "patient_id": "figure1:" + re.sub(r"(?<=\d)[a-z]$", "", pid),
            "finding": r["finding"], "view": r["view"], "modality": r["modality"],
            "age": parse_age(r["age"]), "sex": r["sex"],
            "path": _rel(found, root) if found else "", "present": found is not None, "problem": problem,
            "ref": f"metadata.csv row {i + 2}: patientid {pid}",
        })
    return pd.DataFrame(rows)


def _actualmed(root: Path) -> pd.DataFrame:
    base = source_dir("actualmed", root)
    meta, _ = read_metadata_csv(base / SOURCES["actualmed"].metadata_file)
    rows = []
    for i, r in meta.iterrows():
        rel, present, problem = _resolve(base / "images", r["imagename"], root)
        rows.append({
            "patient_id": f"actualmed:{r['patientid']}", "finding": r["finding"], "view": r["view"],
            "modality": r["modality"], "age": parse_age(r["age"]), "sex": r["sex"],
            "path": rel, "present": present, "problem": problem,
            "ref": f"metadata.csv row {i + 2}: {r['imagename']}",
        })
    return pd.DataFrame(rows)


_KAGGLE_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)[-_]")


def kaggle_patient(name: str) -> str:
    """Return the patient part of a Kaggle file name (``person1_virus_6.jpeg`` -> ``person1``,
    ``IM-0115-0001.jpeg`` -> ``IM-0115``, ``NORMAL2-IM-0095-0001.jpeg`` -> ``NORMAL2-IM-0095``)."""
    match = _KAGGLE_PATIENT.match(name)
    return match.group(1) if match else Path(name).stem


def _kaggle(root: Path) -> pd.DataFrame:
    base = source_dir("kaggle", root)
    rows = []
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            folder = base / split / cls
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if not is_image_name(f.name) or f.is_symlink():
                    continue
                finding = "Normal" if cls == "NORMAL" else (
                    "Pneumonia (viral)" if "virus" in f.name else "Pneumonia (bacterial)")
                rows.append({
                    "patient_id": f"kaggle:{kaggle_patient(f.name)}", "finding": finding,
                    # Kermany et al.: "anterior-posterior" radiographs of children aged 1-5.
                    "view": "AP", "modality": "X-ray", "age": np.nan, "sex": "",
                    "kaggle_split": split, "path": _rel(f, root), "present": True, "problem": "",
                    "ref": f"{split}/{cls}/{f.name}",
                })
    return pd.DataFrame(rows)


_READERS = {"cohen": _cohen, "figure1": _figure1, "actualmed": _actualmed, "kaggle": _kaggle}


def records(key: str, root: Path | None = None) -> pd.DataFrame:
    """Return one row per image that source ``key`` describes, with the columns of :data:`COLUMNS`.

    Raises:
        MissingSourceError: the source has not been fetched (the message says how to fetch it).
        MetadataError: its metadata file is malformed (a missing column, an unparsable CSV).
    """
    root = root or paths.data_dir()
    try:
        table = _READERS[key](root)
    except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeError) as exc:
        src = SOURCES[key]
        what = f"it lacks the column {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc).strip() or \
            type(exc).__name__
        raise MetadataError(
            f"{src.folder}/{src.metadata_file} of source '{key}' cannot be read ({what}). It is not the file the "
            f"source publishes: fetch it again with `cxr-data fetch --source {key}`."
        ) from None
    table["source"] = key
    for col in COLUMNS:
        if col not in table:
            table[col] = ""
    return table[COLUMNS]


def all_records(root: Path | None = None, keys: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Return :func:`records` of every source (or of ``keys``) stacked into one table."""
    return pd.concat([records(k, root) for k in (keys or tuple(SOURCES))], ignore_index=True)
