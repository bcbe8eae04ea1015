"""Fetching the sources: mirror copies, downloads from a real local HTTP server, safe paths, verification.

Real data only: every image here is a file of the offline mirror (``CXR_DATA_MIRROR``), copied,
truncated or served over HTTP on 127.0.0.1. GitHub and Kaggle themselves are never contacted.
The ``mirror`` fixture (tests/conftest.py) fails with a clear message when the variable is unset.
"""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cxr_utils import fetch, paths, sources
from cxr_utils.fetch import git_blob_sha1
from cxr_utils.paths import safe_join
from cxr_utils.sources import SOURCES

FIG1 = SOURCES["figure1"]


@pytest.fixture(scope="session")
def full_fetch(tmp_path_factory, mirror):
    """One complete fetch from the mirror into a fresh data root (done once: ~76 MB, 6.6k files)."""
    root = tmp_path_factory.mktemp("full") / "data"
    return root, fetch.fetch(root=root, mirror=mirror, progress=False)


@pytest.fixture
def mini_mirror(tmp_path, mirror) -> Path:
    """A writable copy of the mirror's Figure 1 folder (55 real images, < 1 MB), made read-only like CI's."""
    top = tmp_path / "mini-mirror"
    shutil.copytree(mirror / FIG1.folder, top / FIG1.folder)
    for p in (top / FIG1.folder).rglob("*"):
        if p.is_file():
            p.chmod(0o444)
    return top


def _report_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "raw" / fetch.REPORT_NAME, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _mirror_files(folder: Path) -> list[str]:
    return fetch.list_source_files(FIG1, folder)


# ------------------------------------------------------------------ mirror


def test_a_full_mirror_fetch_copies_every_source_file_and_counts_the_shortfall(full_fetch, mirror):
    root, report = full_fetch
    assert report.ok, report.summary()
    for status in report.statuses:
        src = SOURCES[status.key]
        in_mirror = fetch.list_source_files(src, fetch._mirror_origin(src, mirror))
        assert status.stats.copied == len(in_mirror)
        assert status.n_present == len([f for f in in_mirror if f != src.metadata_file])
        if src.kaggle_handle:
            assert status.present == src.expected_images  # Kaggle folders must be complete
        else:  # every upstream image the mirror lacks is named by a metadata row, so it is listed
            assert len(status.missing_images) == status.n_expected - status.n_present
    rows = _report_rows(root)
    listed = {r["path"] for r in rows if r["problem"] == "missing_image"}
    assert listed == {p for s in report.statuses for p in s.missing_images}
    assert all(not (root / p).exists() for p in listed)


def test_a_second_fetch_from_the_mirror_copies_nothing_and_says_so(full_fetch, mirror):
    root, first = full_fetch
    second = fetch.fetch(root=root, mirror=mirror, progress=False)
    assert second.ok
    assert second.copied == 0
    assert sum(s.stats.skipped for s in second.statuses) == first.copied
    assert "nothing to copy" in second.summary().splitlines()[-1]


def test_copies_from_a_read_only_mirror_are_writable_and_the_mirror_is_untouched(tmp_path, mini_mirror):
    before = {p: p.stat().st_mtime_ns for p in mini_mirror.rglob("*")}
    report = fetch.fetch(["figure1"], root=tmp_path / "data", mirror=mini_mirror, progress=False)
    assert report.ok, report.summary()
    copies = [p for p in (tmp_path / "data/raw" / FIG1.folder).rglob("*") if p.is_file()]
    assert len(copies) == len(_mirror_files(mini_mirror / FIG1.folder)) == 56
    assert all(p.stat().st_mode & stat.S_IWUSR for p in copies)
    assert {p: p.stat().st_mtime_ns for p in mini_mirror.rglob("*")} == before


def test_an_interrupted_copy_leaves_no_file_that_counts_and_a_rerun_completes(tmp_path, mini_mirror, monkeypatch):
    root = tmp_path / "data"
    real_copy, written = shutil.copyfile, []

    def copy_then_die_on_the_tenth(src, dst):
        written.append(Path(dst))
        if len(written) == 10:  # half the bytes reach the temporary file, then Ctrl-C
            data = Path(src).read_bytes()
            Path(dst).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_copy(src, dst)

    monkeypatch.setattr(fetch.shutil, "copyfile", copy_then_die_on_the_tenth)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch(["figure1"], root=root, mirror=mini_mirror, progress=False)
    interrupted = written[-1]
    assert interrupted.name.endswith(fetch.PART_SUFFIX)
    final = interrupted.with_name(interrupted.name.removesuffix(fetch.PART_SUFFIX))
    assert not final.exists() and not interrupted.exists()
    status = fetch.verify_source("figure1", root, progress=False)
    assert status.n_present == 8  # metadata.csv and 8 images were complete before the interruption

    monkeypatch.undo()
    report = fetch.fetch(["figure1"], root=root, mirror=mini_mirror, progress=False)
    assert report.ok and report.statuses[0].n_present == 55
    assert report.copied == 56 - 9
    original = mini_mirror / FIG1.folder / final.relative_to(root / "raw" / FIG1.folder)
    assert final.read_bytes() == original.read_bytes()


def test_verification_flags_a_truncated_jpeg_and_the_next_fetch_replaces_it(tmp_path, mini_mirror):
    root = tmp_path / "data"
    assert fetch.fetch(["figure1"], root=root, mirror=mini_mirror, progress=False).ok
    victim = root / "raw" / FIG1.folder / "images" / "COVID-00001.jpg"
    size = victim.stat().st_size
    os.truncate(victim, size // 2)
    status = fetch.verify(["figure1"], root, progress=False).statuses[0]
    assert [p for p, _ in status.undecodable] == [f"raw/{FIG1.folder}/images/COVID-00001.jpg"]
    assert "truncated" in status.undecodable[0][1]
    assert any("do not decode" in w for w in status.warnings())
    rows = _report_rows(root)
    assert [r["problem"] for r in rows if r["path"].endswith("COVID-00001.jpg")] == ["undecodable"]

    again = fetch.fetch(["figure1"], root=root, mirror=mini_mirror, progress=False)
    assert again.copied == 1 and again.statuses[0].undecodable == []
    assert victim.stat().st_size == size


def test_a_symlink_in_the_mirror_leading_outside_is_refused_not_copied(tmp_path, mini_mirror, mirror):
    outside = tmp_path / "outside.jpg"
    shutil.copyfile(mirror / FIG1.folder / "images" / "COVID-00001.jpg", outside)
    images = mini_mirror / FIG1.folder / "images"
    images.chmod(0o755)
    (images / "ZZ-evil.jpg").symlink_to(outside)
    report = fetch.fetch(["figure1"], root=tmp_path / "data", mirror=mini_mirror, progress=False)
    assert not report.ok
    assert [rel for rel, _ in report.statuses[0].unsafe] == ["images/ZZ-evil.jpg"]
    assert not (tmp_path / "data/raw" / FIG1.folder / "images" / "ZZ-evil.jpg").exists()
    assert "symbolic link" in report.summary()


def test_a_metadata_row_naming_a_file_outside_the_source_is_reported_as_unsafe(tmp_path, mirror):
    src = SOURCES["actualmed"]
    top = tmp_path / "mirror"
    shutil.copytree(mirror / src.folder, top / src.folder)
    meta = top / src.folder / src.metadata_file
    text = meta.read_text(encoding="utf-8")
    first_name = next(csv.DictReader(io.StringIO(text)))["imagename"]
    meta.write_text(text.replace(first_name, "../../../../etc/passwd", 1), encoding="utf-8")
    status = fetch.fetch(["actualmed"], root=tmp_path / "data", mirror=top, progress=False).statuses[0]
    assert [detail for _, detail in status.unsafe if "etc/passwd" in detail]
    assert status.problems()


# ------------------------------------------------------------------ safe paths


@pytest.mark.parametrize("name", ["../x.jpg", "images/../../x.jpg", "/etc/passwd", "C:\\x.jpg",
                                  "images\\..\\..\\x.jpg", ""])
def test_safe_join_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(paths.UnsafePathError, match="(?i)refused file name"):
        safe_join(tmp_path, name)


def test_safe_join_accepts_plain_names_and_links_that_stay_inside(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "images" / "b.jpg").symlink_to(tmp_path / "images" / "a.jpg")
    assert safe_join(tmp_path, "images/a.jpg") == tmp_path / "images" / "a.jpg"
    assert safe_join(tmp_path, "images/b.jpg") == tmp_path / "images" / "b.jpg"


def test_safe_join_refuses_a_symlink_leading_outside(tmp_path):
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir(), outside.mkdir()
    (base / "images").symlink_to(outside)
    with pytest.raises(paths.UnsafePathError, match="symbolic link"):
        safe_join(base, "images/a.jpg")


# ------------------------------------------------------------------ HTTP downloads


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus ``Range: bytes=N-`` answered with 206 when the server allows it."""

    ranges = True
    seen: list[str | None] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        self.seen.append(rng)
        if not (rng and self.ranges):
            return super().send_head()
        data = Path(self.translate_path(self.path)).read_bytes()
        start = int(rng.split("=")[1].rstrip("-"))
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        return io.BytesIO(data[start:])


@pytest.fixture
def github(tmp_path, mirror, monkeypatch):
    """A local HTTP server laid out like GitHub for the Figure 1 repository, serving the mirror's files."""
    monkeypatch.delenv("CXR_DATA_MIRROR", raising=False)
    served = tmp_path / "served"
    files = _mirror_files(mirror / FIG1.folder)
    raw = served / "raw" / FIG1.github_repo / FIG1.github_commit
    tree = [{"path": "images", "type": "tree", "sha": "0" * 40},
            {"path": "README.md", "type": "blob", "size": 6, "sha": git_blob_sha1(b"hello\n")}]
    for rel in files:
        data = (mirror / FIG1.folder / rel).read_bytes()
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).write_bytes(data)
        tree.append({"path": rel, "type": "blob", "size": len(data), "sha": git_blob_sha1(data)})
    listing = served / "api/repos" / FIG1.github_repo / "git/trees" / FIG1.github_commit
    listing.parent.mkdir(parents=True)

    def write_tree(entries):
        listing.write_text(json.dumps({"sha": FIG1.github_commit, "tree": entries, "truncated": False}))

    write_tree(tree)
    handler = type("Handler", (_Handler,), {"ranges": True, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {"api": f"{base}/api", "raw": f"{base}/raw", "tree": tree, "write_tree": write_tree,
           "handler": handler, "files": files, "served_raw": raw}
    server.shutdown()
    server.server_close()


def _http_fetch(root, github):
    return fetch.fetch(["figure1"], root=root, mirror=None, progress=False, workers=4,
                         github_api=github["api"], github_raw=github["raw"])


def test_download_checks_each_blob_sha_and_a_second_run_downloads_nothing(tmp_path, github, mirror):
    root = tmp_path / "data"
    first = _http_fetch(root, github)
    assert first.ok, first.summary()
    assert first.copied == len(github["files"]) == 56  # README.md is not wanted
    for rel in github["files"]:
        assert (root / "raw" / FIG1.folder / rel).read_bytes() == (mirror / FIG1.folder / rel).read_bytes()
    assert not list((root / "raw").rglob("*" + fetch.PART_SUFFIX))
    second = _http_fetch(root, github)
    assert second.copied == 0 and second.statuses[0].stats.skipped == 56


def test_a_download_whose_bytes_do_not_match_the_blob_sha_is_discarded(tmp_path, github):
    root = tmp_path / "data"
    wrong = [dict(e) for e in github["tree"]]
    victim = next(e for e in wrong if e["path"] == "images/COVID-00002.jpg")
    victim["sha"] = git_blob_sha1(b"not these bytes")
    github["write_tree"](wrong)
    report = _http_fetch(root, github)
    assert not report.ok
    assert [p for p, _ in report.statuses[0].failed] == ["images/COVID-00002.jpg"]
    assert "git blob" in report.statuses[0].failed[0][1]
    dest = root / "raw" / FIG1.folder / "images/COVID-00002.jpg"
    assert not dest.exists() and not fetch.part_path(dest).exists()
    assert report.statuses[0].n_present == 54


def _entry(github, rel):
    return next(e for e in github["tree"] if e["path"] == rel)


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_a_truncated_part_file_is_completed_by_resuming_or_restarting(tmp_path, github, ranges):
    github["handler"].ranges = ranges
    rel = "images/COVID-00003a.jpg"
    entry, data = _entry(github, rel), (github["served_raw"] / rel).read_bytes()
    dest = tmp_path / "images" / "COVID-00003a.jpg"
    dest.parent.mkdir()
    fetch.part_path(dest).write_bytes(data[: len(data) // 3])  # as a killed download leaves it
    url = f"{github['raw']}/{FIG1.github_repo}/{FIG1.github_commit}/{rel}"
    fetch.download_file(url, dest, entry["size"], entry["sha"])
    assert dest.read_bytes() == data and not fetch.part_path(dest).exists()
    assert github["handler"].seen == [f"bytes={len(data) // 3}-"]


def test_a_part_file_with_wrong_bytes_is_discarded_and_downloaded_again(tmp_path, github):
    rel = "images/COVID-00004.jpg"
    entry, data = _entry(github, rel), (github["served_raw"] / rel).read_bytes()
    other = (github["served_raw"] / "images/COVID-00005.jpg").read_bytes()
    dest = tmp_path / "COVID-00004.jpg"
    fetch.part_path(dest).write_bytes(other[: len(data) // 2])  # a .part from some other file
    url = f"{github['raw']}/{FIG1.github_repo}/{FIG1.github_commit}/{rel}"
    fetch.download_file(url, dest, entry["size"], entry["sha"])
    assert dest.read_bytes() == data
    assert github["handler"].seen == [f"bytes={len(data) // 2}-", None]  # resumed, failed the check, restarted


def test_a_tree_entry_with_dotdot_is_refused_and_never_written(tmp_path, github):
    github["write_tree"]([*github["tree"], {**_entry(github, "images/COVID-00001.jpg"), "path": "images/../../x.jpg"}])
    report = _http_fetch(tmp_path / "data", github)
    assert [p for p, _ in report.statuses[0].unsafe] == ["images/../../x.jpg"]
    assert not report.ok
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "data" / "x.jpg").exists()


# ------------------------------------------------------------------ Kaggle and missing sources


def test_find_kaggle_root_skips_macosx_junk_and_takes_the_shallowest_copy(tmp_path):
    for top in ("__MACOSX/chest_xray", "chest_xray", "chest_xray/chest_xray"):
        for sub in SOURCES["kaggle"].expected_images:
            (tmp_path / top / sub).mkdir(parents=True)
    (tmp_path / "__MACOSX" / "train").mkdir()
    assert fetch.find_kaggle_root(tmp_path) == tmp_path / "chest_xray"
    assert fetch.find_kaggle_root(tmp_path / "__MACOSX" / "train") is None


def test_kaggle_without_credentials_says_which_variables_to_set_and_offers_the_mirror(tmp_path, monkeypatch):
    import kagglehub
    from kagglehub.exceptions import UnauthenticatedError

    def refuse(handle, *args, **kwargs):
        raise UnauthenticatedError()

    monkeypatch.delenv("CXR_DATA_MIRROR", raising=False)
    monkeypatch.setattr(kagglehub, "dataset_download", refuse)
    report = fetch.fetch(["kaggle"], root=tmp_path, progress=False)
    assert not report.ok
    text = report.summary()
    for needed in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "--mirror", "cxr-data fetch --source kaggle"):
        assert needed in text


def test_a_missing_source_names_itself_and_the_command_that_fetches_it(tmp_path):
    with pytest.raises(sources.MissingSourceError) as info:
        sources.source_dir("actualmed", root=tmp_path)
    assert "Source 'actualmed'" in str(info.value)
    assert "cxr-data fetch --source actualmed" in str(info.value)


def test_a_mirror_without_the_source_gives_one_error_naming_it(tmp_path, mini_mirror):
    report = fetch.fetch(["kaggle"], root=tmp_path / "data", mirror=mini_mirror, progress=False)
    assert not report.ok
    assert report.statuses[0].problems() == [report.statuses[0].fetch_error]
    assert "source 'kaggle'" in report.statuses[0].fetch_error
    assert report.summary().splitlines()[-1].startswith("Not in place: kaggle. Fix: cxr-data fetch --source kaggle")


# ------------------------------------------------------------------ command line


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "cxr_utils.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_cli_fetch_from_a_mirror_exits_0_then_says_nothing_to_copy(tmp_path, mini_mirror):
    env = {"CXR_DATA_DIR": str(tmp_path / "data")}
    first = _cli("fetch", "--source", "figure1", "--mirror", str(mini_mirror), "--quiet", env_extra=env)
    assert first.returncode == 0, first.stderr
    second = _cli("fetch", "--source", "figure1", "--quiet", env_extra={**env, "CXR_DATA_MIRROR": str(mini_mirror)})
    assert second.returncode == 0, second.stderr
    assert "Source figure1 in place (55 image files; nothing to copy" in second.stdout


def test_cli_with_a_bad_mirror_exits_2_with_one_line_and_no_traceback(tmp_path):
    result = _cli("fetch", "--mirror", str(tmp_path / "nope"), env_extra={"CXR_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("cxr-data: error: Mirror folder") and "nope" in result.stderr


def test_cli_fetch_of_a_source_the_mirror_lacks_exits_1_naming_the_fix(tmp_path, mini_mirror):
    result = _cli("fetch", "--source", "kaggle", "--mirror", str(mini_mirror), "--quiet",
                  env_extra={"CXR_DATA_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Not in place: kaggle. Fix: cxr-data fetch --source kaggle" in result.stdout
