"""``cxr-predict``: a trained run on one's own images, PNG, JPEG or DICOM; every bad input named, the rest
predicted, and an exit status that says which (0 all, 1 some failed, 2 usage or run-folder error)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_files import write_dicom
from PIL import Image

from cxr_utils import CLASSES, predict
from cxr_utils.images import read_image
from cxr_utils.predictions import PROB_COLUMNS


def cxr_predict(*args: str) -> subprocess.CompletedProcess:
    """Run the installed ``cxr-predict`` command in its own process, as a user would."""
    return subprocess.run([str(Path(sys.executable).parent / "cxr-predict"), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def predict_main(capsys, *args: str) -> subprocess.CompletedProcess:
    """Run the command's ``main`` in this process (what ``cxr-predict`` calls; the first test runs the command
    itself): exit status, standard output and standard error as :func:`cxr_predict` returns them, without a new
    Python loading TensorFlow for each call."""
    capsys.readouterr()
    code = predict.main(list(map(str, args)))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["cxr-predict", *map(str, args)], code, out, err)


@pytest.fixture(scope="module")
def images(tmp_path_factory, mirror) -> Path:
    """One real test-folder X-ray in the forms people have: grey and RGB JPEG, RGBA, palette and 16-bit PNG,
    and DICOM (MONOCHROME2, MONOCHROME1, 12-bit with rescale and window)."""
    folder = tmp_path_factory.mktemp("own-images")
    src = sorted((mirror / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[0]
    grey = read_image(src, channels=1)
    Image.fromarray(grey).save(folder / "grey.jpg", quality=95)
    Image.fromarray(np.stack([grey] * 3, -1)).save(folder / "rgb.png")
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1), "RGBA").save(folder / "rgba.png")
    Image.fromarray(grey).convert("P").save(folder / "palette.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "sixteen.png")
    write_dicom(folder / "m2.dcm", grey)
    write_dicom(folder / "m1.dcm", 255 - grey, photometric="MONOCHROME1")
    write_dicom(folder / "twelve.dcm", grey.astype(np.uint16) * 16, bits_stored=12, RescaleSlope=1,
                RescaleIntercept=-1024, WindowCenter=1016, WindowWidth=4096)
    return folder


def test_every_form_of_an_image_is_predicted_and_the_same_picture_gets_the_same_call(tiny_run, images):
    done = cxr_predict(tiny_run, images, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert predict.NOTICE in done.stderr  # machine-readable output keeps stdout for the table
    table = pd.read_csv(pd.io.common.StringIO(done.stdout)).set_index("file")
    assert {Path(f).name for f in table.index} == {p.name for p in images.iterdir()}
    np.testing.assert_allclose(table[list(PROB_COLUMNS)].sum(axis=1), 1.0, atol=1e-4)
    by_name = table.rename(index=lambda f: Path(f).name)
    for a, b in (("m1.dcm", "m2.dcm"), ("rgb.png", "rgba.png"), ("rgb.png", "palette.png")):
        np.testing.assert_allclose(by_name.loc[a, list(PROB_COLUMNS)], by_name.loc[b, list(PROB_COLUMNS)], atol=1e-5)
    assert set(table["called"]) <= set(CLASSES)


def test_the_table_and_json_outputs_say_the_same(tiny_run, images, capsys):
    shown = predict_main(capsys, tiny_run, images / "grey.jpg", images / "m2.dcm")
    assert shown.returncode == 0 and shown.stdout.splitlines()[0] == predict.NOTICE
    assert "grey.jpg" in shown.stdout and "called" in shown.stdout
    as_json = json.loads(predict_main(capsys, tiny_run, images / "grey.jpg", "--format", "json").stdout)
    assert as_json[0]["file"].endswith("grey.jpg") and as_json[0]["called"] in CLASSES


def test_bad_inputs_are_named_and_the_rest_still_predicted(tiny_run, images, tmp_path, mirror, capsys):
    (tmp_path / "notes.png").write_text("patient,finding\n1,COVID-19\n")
    jpeg = sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0].read_bytes()
    (tmp_path / "cut.jpeg").write_bytes(jpeg[: len(jpeg) // 3])
    write_dicom(tmp_path / "report.dcm", None, with_pixels=False)
    Image.new("L", (12_000, 8_000)).save(tmp_path / "huge.png", optimize=True)  # 96 MP: above the limit
    shutil.copy(images / "grey.jpg", tmp_path / "fine.jpg")
    done = predict_main(capsys, tiny_run, tmp_path, tmp_path / "missing.png", "--format", "csv")
    assert done.returncode == 1
    assert "fine.jpg" in done.stdout and len(pd.read_csv(pd.io.common.StringIO(done.stdout))) == 1
    for name, reason in (("notes.png", "not an image"), ("cut.jpeg", "truncated"), ("report.dcm", "without pixel data"),
                         ("huge.png", "above the limit"), ("missing.png", "no such file")):
        assert any(name in line and reason in line for line in done.stderr.splitlines()), (name, done.stderr)
    assert "1 of 6 inputs predicted; 5 failed" in done.stderr


def test_a_folder_that_cannot_be_listed_is_named(tiny_run, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0)
    else:  # root reads any folder: make listing it fail as it fails for anyone else
        real = Path.iterdir

        def refuse(self):
            if self == folder:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", refuse)
    assert predict.main([str(tiny_run), str(folder)]) == 1
    assert "locked: the folder cannot be listed (Permission denied)" in capsys.readouterr().err
    folder.chmod(0o755)


def test_sub_folders_are_searched_only_when_asked(tiny_run, images, tmp_path, capsys):
    (tmp_path / "COVID").mkdir()
    shutil.copy(images / "grey.jpg", tmp_path / "COVID" / "a.jpg")
    shutil.copy(images / "m2.dcm", tmp_path / "COVID" / "b.dcm")
    assert predict.main([str(tiny_run), str(tmp_path)]) == 1
    assert "has sub-folders: add --recursive" in capsys.readouterr().err
    assert predict.main([str(tiny_run), str(tmp_path), "--recursive", "--format", "csv"]) == 0
    table = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert sorted(Path(f).name for f in table["file"]) == ["a.jpg", "b.dcm"]


@pytest.mark.parametrize("broken", ["missing", "incomplete", "not a run"])
def test_a_run_folder_that_cannot_predict_is_a_usage_error(tiny_run, images, tmp_path, broken):
    run = tmp_path / "run"
    if broken == "incomplete":
        shutil.copytree(tiny_run, run)
        (run / "metrics.json").unlink()
    elif broken == "not a run":
        run.mkdir()
    done = cxr_predict(run, images / "grey.jpg")
    assert done.returncode == 2 and done.stdout == ""
    assert {"missing": "does not exist", "incomplete": "not a complete run", "not a run": "no config.json"}[broken] \
        in done.stderr


def test_gradcam_overlays_are_written_for_each_image(tiny_run, images, tmp_path, capsys):
    done = predict_main(capsys, tiny_run, images / "grey.jpg", images / "m1.dcm", "--gradcam", tmp_path / "maps")
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert written == ["grey.jpg.gradcam.png", "m1.dcm.gradcam.png"]
    overlay = Image.open(tmp_path / "maps" / "grey.jpg.gradcam.png")
    assert overlay.mode == "RGB" and overlay.size == (64, 64)  # the run's input size
