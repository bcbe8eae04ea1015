"""``cxr-data`` from the command line: every failure ends in one line that says what to do, with a documented
exit status (0 done, 1 the data is not usable as it is, 2 a usage error, 130 interrupted), and nothing half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def cxr_data(data_dir: Path, *args: str, mirror: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "CXR_DATA_DIR": str(data_dir)}
    env.pop("CXR_DATA_MIRROR", None)
    if mirror is not None:
        env["CXR_DATA_MIRROR"] = str(mirror)
    return subprocess.run([sys.executable, "-m", "cxr_utils.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single ``cxr-data: error:`` line a failure prints, checked to be the only thing on stderr."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in lines if ln.startswith("cxr-data: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def data_copy(curated_data_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's fetched and curated data folder."""
    root = tmp_path / "data"
    shutil.copytree(curated_data_dir, root, ignore=shutil.ignore_patterns("cache"))
    return root


def test_curate_without_the_sources_names_the_missing_one_and_the_fetch_command(tmp_path):
    proc = cxr_data(tmp_path / "empty", "curate", "--quiet")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "Source 'cohen'" in line and "cxr-data fetch --source cohen" in line


def test_curate_refuses_to_change_the_split_then_force_replaces_it_and_keeps_a_backup(data_copy):
    manifest = data_copy / "curated" / "manifest.csv"
    original = manifest.read_text()
    rows = original.splitlines()
    manifest.write_text("\n".join(rows[:1] + rows[2:]) + "\n")  # a manifest that curation no longer reproduces
    edited = manifest.read_text()
    proc = cxr_data(data_copy, "curate", "--quiet")
    assert proc.returncode == 1
    assert "--force" in one_error_line(proc) and "manifest.csv.bak" in one_error_line(proc)
    assert manifest.read_text() == edited  # refused: nothing was rewritten
    forced = cxr_data(data_copy, "curate", "--force", "--quiet")
    assert forced.returncode == 0, forced.stderr
    assert manifest.read_text() == original
    assert (data_copy / "curated" / "manifest.csv.bak").read_text() == edited


def test_a_malformed_metadata_csv_names_the_file_and_how_to_fetch_it_again(data_copy):
    meta = data_copy / "raw" / "covid-chestxray-dataset" / "metadata.csv"
    lines = meta.read_bytes().splitlines(keepends=True)
    header = lines[0].replace(b"filename", b"file_name")  # a column the reader needs, renamed
    meta.write_bytes(header + b"".join(lines[1:]))
    proc = cxr_data(data_copy, "curate", "--quiet")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "covid-chestxray-dataset/metadata.csv" in line and "filename" in line
    assert "cxr-data fetch --source cohen" in line


def test_an_unwritable_data_folder_is_named_with_the_fix(data_copy):
    curated = data_copy / "curated"
    shutil.rmtree(curated)
    curated.write_text("a file where the curated folder should be\n")
    proc = cxr_data(data_copy, "curate", "--quiet")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "cannot write" in line and "CXR_DATA_DIR" in line


def test_ctrl_c_during_curation_exits_130_and_leaves_the_manifest_whole(data_copy):
    manifest = data_copy / "curated" / "manifest.csv"
    before = manifest.read_bytes()
    (data_copy / "curated" / ".image_features.pkl").unlink()  # so curation decodes for a while
    env = {**os.environ, "CXR_DATA_DIR": str(data_copy)}
    # As from a terminal: SIGINT at its default, even when the tests themselves were started in the background (a
    # non-interactive shell starts background commands with SIGINT ignored, and their children inherit that).
    proc = subprocess.Popen([sys.executable, "-m", "cxr_utils.cli", "curate", "--force"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []  # stderr as it arrives (the progress bar), read by a thread so the pipe never fills
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while "Decoding and hashing images" not in "".join(seen):  # wait for the decoding itself, whatever the load
        assert proc.poll() is None, "curation ended before it could be interrupted"
        assert time.time() < deadline, "curation never started decoding"
        time.sleep(0.1)
    time.sleep(1)  # into the decoding of some 6,000 images, which takes several seconds
    assert proc.poll() is None, "curation ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=30)
    err = "".join(seen)
    assert proc.returncode == 130, (out, err)
    assert "interrupted" in one_error_line(subprocess.CompletedProcess(proc.args, 130, out, err))
    assert manifest.read_bytes() == before
    assert not [p.name for p in (data_copy / "curated").iterdir() if ".tmp" in p.name or p.suffix == ".part"]


def test_fetch_with_a_mirror_that_does_not_exist_is_a_usage_error(tmp_path):
    proc = cxr_data(tmp_path / "data", "fetch", "--quiet", mirror=tmp_path / "no-mirror")
    assert proc.returncode == 2
    assert "no-mirror" in one_error_line(proc)
