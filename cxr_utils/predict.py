"""``cxr-predict``: a trained run on one's own chest X-rays (PNG, JPEG, DICOM), for research and teaching only.

    cxr-predict RUN_DIR FILE_OR_FOLDER... [--format table|csv|json] [--gradcam OUT_DIR]

Each file becomes model input exactly as the run's test images did (:func:`cxr_utils.preprocess.read`
at the run's image size and channels, then :func:`cxr_utils.preprocess.scale`), and the run's
``best.keras`` gives the probability of each class. A folder contributes its image files (by name:
PNG, JPEG and the other formats the sources use, ``.dcm``; and any file that is DICOM by content).
With ``--gradcam OUT_DIR`` each image's Grad-CAM overlay for the class it is called is written there
(:mod:`cxr_utils.saliency`).

A file that cannot be read is named with the reason on stderr and the others are still predicted.
Exit status: 0 every file predicted; 1 some failed; 2 a usage error or a run folder that is missing,
incomplete or not a run of this course. Nothing here is a diagnosis: the models learned from a
confounded collection (lesson 08).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, atomic, preprocess, runs
from cxr_utils.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageError, is_dicom
from cxr_utils.notebook import import_tensorflow_quietly
from cxr_utils.predictions import PROB_COLUMNS

NOTICE = "Research and teaching use only: not a diagnosis, not a medical device (see lesson 08 for why)."
"""The line every output of ``cxr-predict`` carries."""

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass
class Prediction:
    """What :func:`predict_files` gives: one row per predicted file, and the files that failed with why."""

    table: pd.DataFrame
    """``file``, ``p_COVID-19``, ``p_Normal``, ``p_Pneumonia``, ``called`` (and ``gradcam`` with overlays)."""
    failures: list[tuple[str, str]] = field(default_factory=list)
    """``(file, reason)`` for each file that could not be read."""


def _folder_entries(folder: Path, recursive: bool) -> list[Path]:
    """The visible files of ``folder`` (and of its visible sub-folders when ``recursive``), sorted."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            found.append(p)
        elif recursive and p.is_dir():
            found += _folder_entries(p, recursive)
    return found


def image_files(inputs: Sequence[str | os.PathLike[str]], *,
                recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders into the image files to predict, and the inputs that could not be used.

    A folder gives its files whose name ends like an image or a DICOM file, and any other file that is
    DICOM by content; hidden files are skipped; sub-folders only when ``recursive``. Returns
    ``(files, problems)``: ``problems`` holds ``(input, reason)`` for each input that gave nothing.
    """
    files, problems = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            try:
                entries = _folder_entries(item, recursive)
            except OSError as exc:
                problems.append((str(item), f"the folder cannot be listed ({exc.strerror or exc})"))
                continue
            found = [p for p in entries if p.name.lower().endswith(IMAGE_SUFFIXES + DICOM_SUFFIXES) or is_dicom(p)]
            if not found:
                subfolders = not recursive and any(p.is_dir() and not p.name.startswith(".") for p in item.iterdir())
                hint = "; it has sub-folders: add --recursive to search them" if subfolders else ""
                problems.append((str(item), f"the folder holds no image files (PNG, JPEG, DICOM ...){hint}"))
            files += found
        elif item.is_file():
            files.append(item)
        else:
            problems.append((str(item), "no such file or folder"))
    return files, problems


def predict_files(run_dir: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]], *,
                  gradcam_dir: str | os.PathLike[str] | None = None, batch_size: int = 32) -> Prediction:
    """Predict ``files`` with the complete run ``run_dir``, preprocessed as its test images were.

    Raises:
        cxr_utils.runs.RunFolderError: the run folder is missing, incomplete or not a course run.
    """
    runs.require_complete(run_dir)
    size, channels = runs.preprocessing(run_dir)
    model = runs.load_model(run_dir)
    pixels, names, failures = [], [], []
    for f in files:
        try:
            pixels.append(preprocess.read(f, size, channels))
            names.append(str(f))
        except ImageError as exc:
            failures.append((str(f), exc.reason))
    columns = ["file", *PROB_COLUMNS, "called"]
    if not pixels:
        return Prediction(pd.DataFrame(columns=columns), failures)
    x = preprocess.scale(np.stack(pixels))
    probs = np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
    table = pd.DataFrame({"file": names, **{c: probs[:, j] for j, c in enumerate(PROB_COLUMNS)}})
    table["called"] = [CLASSES[k] for k in probs.argmax(axis=1)]
    if gradcam_dir is not None:
        table["gradcam"] = write_overlays(model, x, np.stack(pixels), probs.argmax(axis=1), names, Path(gradcam_dir))
    return Prediction(table, failures)


def write_overlays(model, x: np.ndarray, pixels: np.ndarray, called: np.ndarray, names: Sequence[str],
                   out_dir: Path) -> list[str]:
    """Write each image's Grad-CAM overlay (for the class it is called) as ``<out_dir>/<name>.gradcam.png``."""
    from cxr_utils import plots, saliency

    maps = saliency.grad_cam(model, x, called)
    out = []
    for i, name in enumerate(names):
        path = out_dir / f"{Path(name).name}.gradcam.png"
        with atomic.replacing(path) as tmp:
            plots.overlay_image(pixels[i], maps[i]).save(tmp, format="PNG")
        out.append(str(path))
    return out


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """The predictions as ``table`` (aligned text, probabilities to 3 decimals), ``csv`` or ``json`` (records)."""
    if fmt == "csv":
        return table.to_csv(index=False, float_format="%.6g", lineterminator="\n")
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=2) + "\n"
    shown = table.copy()
    for c in PROB_COLUMNS:
        shown[c] = shown[c].map(lambda v: f"{v:.3f}")
    return shown.to_string(index=False) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr-predict",
        description="Apply a trained run of the course to your own chest X-rays (PNG, JPEG, DICOM). " + NOTICE,
    )
    parser.add_argument("run", help="a complete run folder (runs/<name>, with best.keras)")
    parser.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER", help="image files or folders of them")
    parser.add_argument("--format", choices=["table", "csv", "json"], default="table", help="output (default table)")
    parser.add_argument("-r", "--recursive", action="store_true", help="search the folders' sub-folders too")
    parser.add_argument("--gradcam", metavar="OUT_DIR", help="also write each image's Grad-CAM overlay here")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cxr-predict``; return the exit status (0 all predicted, 1 some failed, 2 usage or run-folder error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        runs.require_complete(args.run)
    except runs.RunFolderError as exc:
        print(f"cxr-predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    files, problems = image_files(args.inputs, recursive=args.recursive)
    if files:
        import_tensorflow_quietly()  # no "Could not find cuda drivers" lines around the table
    result = predict_files(args.run, files, gradcam_dir=args.gradcam, batch_size=args.batch_size) if files else \
        Prediction(pd.DataFrame(columns=["file", *PROB_COLUMNS, "called"]))
    failed = problems + result.failures
    out = sys.stdout if args.format == "table" else sys.stderr
    print(NOTICE, file=out)
    if len(result.table):
        sys.stdout.write(format_table(result.table, args.format))
    for name, reason in failed:
        print(f"cxr-predict: {name}: {reason}", file=sys.stderr)
    if failed:
        print(f"cxr-predict: {len(result.table)} of {len(result.table) + len(failed)} inputs predicted; "
              f"{len(failed)} failed (named above)", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
