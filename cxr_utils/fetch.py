"""Getting the four sources into ``<CXR_DATA_DIR>/raw`` in their upstream layout, and verifying them.

The sources themselves (keys, folders, pinned commits, expected counts) are :mod:`cxr_utils.sources`.

:func:`fetch` puts the sources in place (``cxr-data fetch`` calls it), from one of three origins:

- a **local mirror** (``--mirror DIR`` or ``CXR_DATA_MIRROR``) laid out as upstream: the metadata file
  and the image files are copied (content only, never permissions; the mirror is never written);
- **GitHub**, for the three COVID-19 collections: one git-trees API request lists the files at the
  pinned commit with their size and git blob SHA-1; the metadata file and the images under
  ``images/`` are downloaded from ``raw.githubusercontent.com`` and checked against that SHA-1;
- **Kaggle**, through ``kagglehub`` (needs Kaggle credentials), then copied into ``raw/chest_xray``.

Every file is written as ``<name>.part`` and renamed into place only when complete (and, for a
download, when its SHA-1 matches), so an interrupted fetch never leaves a half file that counts as
data. A second fetch skips identical files and says so. After copying, :func:`verify` checks each
source: image counts against the registry, metadata rows whose image file is absent, and that every
image decodes (:func:`cxr_utils.images.read_image`). Problems are listed in ``raw/fetch_report.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from cxr_utils import atomic, metadata, paths
from cxr_utils.images import ImageError, is_image_name, read_image
from cxr_utils.paths import UnsafePathError, safe_join  # re-exported: the one check for names read from data
from cxr_utils.sources import SOURCES, MissingSourceError, Source, get_source, source_dir

GITHUB_API = "https://api.github.com"
"""Base URL of the GitHub REST API (the git trees listing). Tests point it at a local server."""

GITHUB_RAW = "https://raw.githubusercontent.com"
"""Base URL the files are downloaded from: ``{GITHUB_RAW}/{repo}/{commit}/{path}``."""

REPORT_NAME = "fetch_report.csv"
"""File under ``raw/`` listing every problem the last fetch found (one row per file)."""

KAGGLE_CREDENTIALS_HELP = (
    "Kaggle needs an API token: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put "
    "kaggle.json (from kaggle.com > Settings > API > Create New Token) in ~/.kaggle/. "
    "Alternatively copy the data from a local mirror: cxr-data fetch --mirror DIR (or set CXR_DATA_MIRROR)."
)

PART_SUFFIX = ".part"
"""Suffix of a file being written; it only gets its real name once complete."""


# --------------------------------------------------------------------------------------------------
# Errors and safe paths
# --------------------------------------------------------------------------------------------------


class FetchError(RuntimeError):
    """A source could not be fetched; the message says why and what to do about it."""


class MirrorError(FetchError):
    """The mirror given by ``--mirror``/``CXR_DATA_MIRROR`` does not exist or lacks a source."""


class IntegrityError(FetchError):
    """A downloaded file does not have the size or git blob SHA-1 the upstream listing promised."""


# --------------------------------------------------------------------------------------------------
# Writing files: through ``<name>.part`` and a rename (resumable for downloads)
# --------------------------------------------------------------------------------------------------


def part_path(dest: Path) -> Path:
    """Return the temporary name ``dest`` is written under until it is complete (``<name>.part``)."""
    return atomic.temporary_name(dest, PART_SUFFIX)


def copy_file_atomic(src: Path, dest: Path) -> None:
    """Copy the *content* of ``src`` to ``dest`` through ``dest.part`` and a rename (:mod:`cxr_utils.atomic`).

    Only bytes are copied, never permission bits (a read-only mirror gives writable copies); the
    modification time is carried over so that a later fetch can see the copy is identical. On any
    failure (including Ctrl-C) the ``.part`` file is removed and ``dest`` is left as it was. Not synced
    to disk one by one (thousands of files; a fetch verifies what it copied).
    """
    with atomic.replacing(dest, suffix=PART_SUFFIX, fsync=False) as part:
        shutil.copyfile(src, part)
        st = src.stat()
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))


def _same_copy(src_stat: os.stat_result, dest: Path) -> bool:
    """True when ``dest`` has the size and (to 2 s, FAT's resolution) the mtime of the source file."""
    try:
        st = dest.stat()
    except FileNotFoundError:
        return False
    return st.st_size == src_stat.st_size and abs(st.st_mtime_ns - src_stat.st_mtime_ns) < 2_000_000_000


def git_blob_sha1(data: bytes | Path) -> str:
    """Return the git blob id of ``data`` (bytes or a file): SHA-1 of ``b"blob <size>\\0" + content``."""
    if isinstance(data, bytes):
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    path = Path(data)
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# What was verified already (so that a second fetch is quick)
# --------------------------------------------------------------------------------------------------


class _FileState:
    """Per-source record of files already checked, keyed by relative path, valid while size+mtime hold.

    Lives in ``<data>/cache/fetch/<key>.json``; deleting it only makes the next fetch re-check.
    """

    def __init__(self, key: str, root: Path | None):
        self.path = paths.cache_dir(root) / "fetch" / f"{key}.json"
        self._lock = threading.Lock()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.origin: str = data.get("origin", "")
        self.files: dict[str, dict] = data.get("files", {})

    def get(self, rel: str, st: os.stat_result) -> dict:
        entry = self.files.get(rel)
        if entry and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return entry
        return {}

    def put(self, rel: str, st: os.stat_result, **info: object) -> None:
        with self._lock:
            entry = self.get(rel, st)
            self.files[rel] = {**entry, "size": st.st_size, "mtime_ns": st.st_mtime_ns, **info}

    def save(self) -> None:
        atomic.write_text(self.path, json.dumps({"origin": self.origin, "files": self.files}, indent=0))


# --------------------------------------------------------------------------------------------------
# Which files make up a source
# --------------------------------------------------------------------------------------------------


def _is_wanted(src: Source, rel: str) -> bool:
    """True for the metadata file and for image files directly inside one of the registry's folders."""
    if rel == src.metadata_file:
        return True
    p = PurePosixPath(rel)
    return str(p.parent) in src.expected_images and not p.name.startswith(".") and is_image_name(p.name)


def list_source_files(src: Source, folder: Path) -> list[str]:
    """Return the metadata file and image files of ``src`` found under ``folder`` (relative, ``/``-separated).

    Hidden files, ``.part`` files and anything outside the registry's image folders are ignored.

    Raises:
        UnsafePathError: an image folder is a symbolic link leading outside ``folder``.
    """
    found = []
    if src.metadata_file and (folder / src.metadata_file).is_file():
        found.append(src.metadata_file)
    for sub in src.expected_images:
        d = safe_join(folder, sub)
        if d.is_dir():
            found += sorted(f"{sub}/{e.name}" for e in os.scandir(d) if _is_wanted(src, f"{sub}/{e.name}"))
    return found


def find_kaggle_root(top: Path, max_depth: int = 4) -> Path | None:
    """Return the shallowest folder under ``top`` holding ``train/NORMAL``, ``test/...``, ``val/...``.

    The Kaggle archive nests the set (``chest_xray/``, again in ``chest_xray/chest_xray/``) and adds
    ``__MACOSX`` junk; those and hidden folders are skipped. ``None`` when nothing matches.
    """
    wanted = SOURCES["kaggle"].expected_images
    level = [Path(top)]
    for _ in range(max_depth + 1):
        for d in level:
            if all((d / sub).is_dir() for sub in wanted):
                return d
        level = sorted(
            c for d in level for c in d.iterdir()
            if c.is_dir() and not c.is_symlink() and not c.name.startswith((".", "__MACOSX"))
        )
    return None


# --------------------------------------------------------------------------------------------------
# Origins: mirror, GitHub, Kaggle
# --------------------------------------------------------------------------------------------------


@dataclass
class CopyStats:
    """What one fetch of one source did."""

    origin: str = ""
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _copy_tree(src: Source, origin: Path, dest: Path, progress: bool, stats: CopyStats) -> None:
    """Copy the metadata and image files of ``src`` from ``origin`` to ``dest``, skipping identical ones."""
    try:
        files = list_source_files(src, origin)
    except UnsafePathError as exc:
        stats.unsafe.append((str(origin), str(exc)))
        return
    try:  # the destination folders must not be links leading out either
        for sub in src.expected_images:
            safe_join(dest, sub)
    except UnsafePathError as exc:
        stats.unsafe.append((str(dest), str(exc)))
        return
    todo = []
    for rel in files:
        # Names come from listing folders safe_join accepted, so they are plain; only a file that is
        # itself a symbolic link can lead out (checking just those keeps a 6.6k-file rerun quick).
        s, d = origin / rel, dest / rel
        if s.is_symlink() or d.is_symlink():
            try:
                safe_join(origin, rel), safe_join(dest, rel)
            except UnsafePathError as exc:
                stats.unsafe.append((rel, str(exc)))
                continue
        st = s.stat()
        if _same_copy(st, d):
            stats.skipped += 1
        else:
            todo.append((s, d, st.st_size))
    with tqdm(total=sum(n for *_, n in todo), desc=f"{src.key}: copying", unit="B", unit_scale=True,
              disable=not progress or not todo) as bar:
        for s, d, n in todo:
            copy_file_atomic(s, d)
            stats.copied += 1
            stats.bytes_copied += n
            bar.update(n)


def _mirror_origin(src: Source, mirror: Path) -> Path:
    """Return the folder of ``src`` inside ``mirror`` (upstream layout), or raise :class:`MirrorError`."""
    if src.kaggle_handle:
        found = find_kaggle_root(mirror / src.folder) if (mirror / src.folder).is_dir() else find_kaggle_root(mirror)
        if found is None:
            raise MirrorError(f"Mirror {mirror} has no {src.folder}/ with train/, test/ and val/ NORMAL and "
                              f"PNEUMONIA folders, so source '{src.key}' cannot be copied from it.")
        return found
    origin = mirror / src.folder
    if not (origin / src.metadata_file).is_file():
        raise MirrorError(f"Mirror {mirror} has no {src.folder}/{src.metadata_file}, so source '{src.key}' "
                          "cannot be copied from it.")
    return origin


def github_tree(src: Source, session, api: str = GITHUB_API) -> list[dict]:
    """List the blobs (``path``, ``size``, ``sha``) of ``src``'s repository at its pinned commit.

    One request to the git trees API; ``GITHUB_TOKEN`` is sent if set (the anonymous limit is 60
    requests an hour, plenty for three sources).

    Raises:
        FetchError: GitHub cannot be reached, refuses, or returns a truncated listing.
    """
    import requests

    url = f"{api}/repos/{src.github_repo}/git/trees/{src.github_commit}?recursive=1"
    headers = {"Accept": "application/vnd.github+json"}
    if os.environ.get("GITHUB_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['GITHUB_TOKEN']}"
    try:
        r = session.get(url, headers=headers, timeout=60)
    except requests.RequestException as exc:
        raise FetchError(f"Cannot reach GitHub to list {src.github_repo} ({type(exc).__name__}). Check the network, "
                         "or copy the sources from a local mirror: cxr-data fetch --mirror DIR") from None
    if r.status_code in (401, 403, 429):
        raise FetchError(f"GitHub refused to list {src.github_repo} (HTTP {r.status_code}, probably the hourly rate "
                         "limit): set GITHUB_TOKEN to a personal access token, wait, or use --mirror DIR.")
    if r.status_code != 200:
        raise FetchError(f"GitHub listing of {src.github_repo}@{src.github_commit[:8]} failed: HTTP {r.status_code}.")
    data = r.json()
    if data.get("truncated"):
        raise FetchError(f"GitHub truncated the listing of {src.github_repo}; clone it with git and use --mirror.")
    return [e for e in data.get("tree", []) if e.get("type") == "blob"]


_thread_local = threading.local()


def _session():
    import requests

    if not hasattr(_thread_local, "session"):
        _thread_local.session = requests.Session()
        _thread_local.session.headers["User-Agent"] = "cxr-course (cxr-data fetch)"
    return _thread_local.session


def download_file(url: str, dest: Path, size: int, blob_sha: str, session=None,
                  on_bytes: Callable[[int], None] | None = None) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming a partial ``.part`` when the server allows.

    An existing ``.part`` shorter than ``size`` is continued with an HTTP ``Range`` request; a server
    that answers with the whole file (200) restarts it. The complete file must have ``size`` bytes
    and git blob id ``blob_sha`` before it is renamed to ``dest``. A resumed file that fails the
    check is downloaded once more from scratch.

    Raises:
        IntegrityError: the bytes do not match (the ``.part`` file is deleted).
        FetchError: the server cannot be reached or answers with an error.
    """
    import requests

    session = session or _session()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    for attempt in (1, 2):
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size or size == 0:
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with session.get(url, headers=headers, stream=True, timeout=(15, 120)) as r:
                    resumed = r.headers.get("Content-Range", "").startswith(f"bytes {have}-")
                    if r.status_code == 206 and have and resumed:
                        mode = "ab"
                    elif r.status_code == 200:
                        mode, have = "wb", 0
                    else:
                        raise FetchError(f"Download of {url} failed: HTTP {r.status_code}.")
                    with open(part, mode) as f:
                        for chunk in r.iter_content(1 << 16):
                            f.write(chunk)
                            if on_bytes:
                                on_bytes(len(chunk))
            except requests.RequestException as exc:
                raise FetchError(f"Download of {url} was interrupted ({type(exc).__name__}); run the fetch again "
                                 f"to resume it.") from None
        got_size = part.stat().st_size
        got_sha = git_blob_sha1(part)
        if got_size == size and got_sha == blob_sha:
            atomic.move_into_place(part, dest)
            return
        part.unlink()
        if attempt == 1 and have:
            continue  # a resumed file went wrong: restart from zero once
        raise IntegrityError(f"Downloaded {url} has {got_size} bytes and git blob {got_sha[:12]}, expected {size} "
                             f"bytes and {blob_sha[:12]}; it was discarded. Run the fetch again, or use --mirror DIR.")


def _fetch_github(src: Source, dest: Path, state: _FileState, progress: bool, workers: int, stats: CopyStats,
                  api: str, raw: str) -> None:
    tree = github_tree(src, _session(), api)
    todo = []
    for entry in tree:
        rel = entry["path"]
        try:
            d = safe_join(dest, rel)
        except UnsafePathError as exc:
            stats.unsafe.append((rel, str(exc)))
            continue
        if not _is_wanted(src, rel):
            continue
        if d.is_file():
            st = d.stat()
            known = state.get(rel, st).get("sha1")
            if st.st_size == entry["size"] and (known or git_blob_sha1(d)) == entry["sha"]:
                state.put(rel, st, sha1=entry["sha"])
                stats.skipped += 1
                continue
        todo.append((entry, d))
    bar = tqdm(total=sum(e["size"] for e, _ in todo), desc=f"{src.key}: downloading", unit="B", unit_scale=True,
               disable=not progress or not todo)

    def one(entry: dict, d: Path) -> None:
        url = f"{raw}/{src.github_repo}/{src.github_commit}/{urllib.parse.quote(entry['path'])}"
        download_file(url, d, entry["size"], entry["sha"], on_bytes=bar.update)
        state.put(entry["path"], d.stat(), sha1=entry["sha"])

    with bar, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, e, d): e["path"] for e, d in todo}
        for fut in as_completed(futures):
            try:
                fut.result()
                stats.copied += 1
                stats.bytes_copied += next(e["size"] for e, _ in todo if e["path"] == futures[fut])
            except FetchError as exc:
                stats.failed.append((futures[fut], str(exc)))


def _kaggle_download(src: Source) -> Path:
    """Download (or find in kagglehub's cache) the Kaggle set; return the folder holding train/test/val."""
    import requests

    try:
        import kagglehub
        from kagglehub import exceptions as kx
    except ImportError:
        raise FetchError("kagglehub is not installed: pip install kagglehub (it is in the course's pinned "
                         "dependencies), or use --mirror DIR.") from None
    try:
        path = Path(kagglehub.dataset_download(src.kaggle_handle))
    except (kx.UnauthenticatedError, kx.CredentialError) as exc:
        raise FetchError(f"Kaggle did not accept the credentials for {src.kaggle_handle} ({exc}). "
                         f"{KAGGLE_CREDENTIALS_HELP}") from None
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else "?"
        hint = KAGGLE_CREDENTIALS_HELP if code in (401, 403) else "Use --mirror DIR if the problem persists."
        raise FetchError(f"Kaggle refused {src.kaggle_handle} (HTTP {code}). {hint}") from None
    except requests.RequestException as exc:
        raise FetchError(f"Cannot reach Kaggle for {src.kaggle_handle} ({type(exc).__name__}). "
                         f"{KAGGLE_CREDENTIALS_HELP}") from None
    except Exception as exc:  # kagglehub wraps many failures in its own exception types
        raise FetchError(
            f"kagglehub could not download {src.kaggle_handle}: {exc}. {KAGGLE_CREDENTIALS_HELP}"
        ) from None
    found = find_kaggle_root(path)
    if found is None:
        raise FetchError(f"kagglehub downloaded {src.kaggle_handle} to {path}, but no folder there holds "
                         "train/, test/ and val/ with NORMAL and PNEUMONIA.")
    return found


def fetch_source(key: str, root: Path | None = None, mirror: Path | None = None, progress: bool = True,
                 workers: int = 8, github_api: str = GITHUB_API, github_raw: str = GITHUB_RAW) -> CopyStats:
    """Put source ``key`` in ``<data>/raw/<folder>``: from ``mirror`` if given, else from GitHub or Kaggle.

    Files already identical are skipped. Returns what was copied, skipped, refused and failed.

    Raises:
        MirrorError: ``mirror`` does not hold this source.
        FetchError: the upstream cannot be reached or refuses (message says what to do).
    """
    src = get_source(key)
    dest = paths.raw_dir(root) / src.folder
    state = _FileState(key, root)
    stats = CopyStats()
    try:
        if mirror is not None:
            stats.origin = "mirror"
            _copy_tree(src, _mirror_origin(src, Path(mirror)), dest, progress, stats)
        elif src.github_repo:
            stats.origin = f"github@{src.github_commit[:8]}"
            _fetch_github(src, dest, state, progress, workers, stats, github_api, github_raw)
        else:
            stats.origin = "kaggle"
            _copy_tree(src, _kaggle_download(src), dest, progress, stats)
    finally:
        state.origin = stats.origin
        state.save()
    return stats


# --------------------------------------------------------------------------------------------------
# Verification and the report
# --------------------------------------------------------------------------------------------------


@dataclass
class SourceStatus:
    """What is on disk for one source after a fetch (or a plain :func:`verify`)."""

    key: str
    in_place: bool
    expected: dict[str, int]
    present: dict[str, int]
    missing_images: list[str] = field(default_factory=list)
    """Image files named by a metadata row that are absent (relative to the data dir)."""
    not_images: list[str] = field(default_factory=list)
    """Absent non-image files named by metadata rows (Cohen's CT volumes, never in the repository)."""
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    unsafe: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    fetch_error: str | None = None
    """Why fetching failed (upstream unreachable, mirror lacks the source...)."""
    stats: CopyStats = field(default_factory=CopyStats)

    @property
    def n_expected(self) -> int:
        return sum(self.expected.values())

    @property
    def n_present(self) -> int:
        return sum(self.present.values())

    @property
    def exact(self) -> bool:
        """Kaggle's split/class folders must be complete: the labels and splits come from them."""
        return get_source(self.key).kaggle_handle is not None

    def problems(self) -> list[str]:
        """Errors: the source cannot be used as it is (fetch exits nonzero)."""
        out = []
        if self.error:
            out.append(self.error)
        if self.fetch_error and not self.in_place:
            out.append(self.fetch_error)
        elif not self.in_place:
            out.append(f"{self.key}: not in place. {_fix_command(self.key)}")
        if self.failed:
            out.append(f"{self.key}: {len(self.failed)} file(s) could not be fetched, e.g. {self.failed[0][1]}")
        if self.unsafe:
            out.append(f"{self.key}: {len(self.unsafe)} unsafe file name(s) refused, e.g. {self.unsafe[0][1]}")
        if self.in_place and self.exact:
            wrong = [f"{sub} {self.present.get(sub, 0)}/{n}" for sub, n in self.expected.items()
                     if self.present.get(sub, 0) != n]
            if wrong:
                out.append(f"{self.key}: image counts differ from the Kaggle set ({', '.join(wrong)}). "
                           f"{_fix_command(self.key)}")
        return out

    def warnings(self) -> list[str]:
        """Shortfalls that curation copes with (rows skipped, listed in the report)."""
        out = []
        if not self.in_place:
            return out
        if self.fetch_error:
            out.append(f"{self.fetch_error} The copy already in place was kept.")
        if not self.exact and self.n_present < self.n_expected:
            first = ", ".join(Path(p).name for p in self.missing_images[:2])
            out.append(f"{self.key}: {self.n_present} of {self.n_expected} upstream image files present; "
                       f"{len(self.missing_images)} metadata rows name an absent image (e.g. {first}; all in "
                       f"raw/{REPORT_NAME}). A mirror lacks them; the full set is at {get_source(self.key).url}.")
        elif self.missing_images:
            out.append(f"{self.key}: {len(self.missing_images)} metadata rows name an absent image "
                       f"(listed in raw/{REPORT_NAME}).")
        if self.undecodable:
            path, reason = self.undecodable[0]
            out.append(f"{self.key}: {len(self.undecodable)} image(s) do not decode, e.g. {path}: {reason}. "
                       "Curation skips them; fetch again to replace them.")
        return out

    def report_rows(self) -> list[dict[str, str]]:
        rows = [{"source": self.key, "path": p, "problem": "missing_image", "detail": "named in metadata, file absent"}
                for p in self.missing_images]
        rows += [{"source": self.key, "path": p, "problem": "not_an_image_file",
                  "detail": "named in metadata, not an image file of the repository (e.g. a CT volume)"}
                 for p in self.not_images]
        rows += [{"source": self.key, "path": p, "problem": "undecodable", "detail": r} for p, r in self.undecodable]
        rows += [{"source": self.key, "path": p, "problem": "unsafe_path", "detail": r} for p, r in self.unsafe]
        rows += [{"source": self.key, "path": p, "problem": "fetch_failed", "detail": r} for p, r in self.failed]
        for problem, text in (("source_error", self.error), ("fetch_error", self.fetch_error)):
            if text:
                rows.append({"source": self.key, "path": "", "problem": problem, "detail": text})
        return rows


def _fix_command(key: str) -> str:
    return f"Fix: cxr-data fetch --source {key} (add --mirror DIR or set CXR_DATA_MIRROR to copy from a mirror)."


def _rel_to_data(path: Path, root: Path | None) -> str:
    return Path(path).relative_to(root or paths.data_dir()).as_posix()


def verify_source(key: str, root: Path | None = None, progress: bool = True, decode: bool = True) -> SourceStatus:
    """Check what is on disk for source ``key``: counts per folder, absent metadata images, decoding.

    Images already decoded by an earlier check (same size and mtime) are not decoded again.
    """
    src = get_source(key)
    folder = paths.raw_dir(root) / src.folder
    status = SourceStatus(key=key, in_place=False, expected=dict(src.expected_images), present={})
    try:
        source_dir(key, root)
    except MissingSourceError:
        return status
    status.in_place = True
    try:
        files = list_source_files(src, folder)
    except UnsafePathError as exc:
        status.unsafe.append((str(folder), str(exc)))
        return status
    images = [f for f in files if f != src.metadata_file]
    for rel in images:
        sub = str(PurePosixPath(rel).parent)
        status.present[sub] = status.present.get(sub, 0) + 1
    if src.metadata_file:
        try:
            rows = metadata.records(key, root)
        except (OSError, ValueError, KeyError) as exc:
            status.error = f"{key}: {src.metadata_file} cannot be read ({exc}). {_fix_command(key)}"
        else:
            for row in rows[~rows["present"].astype(bool)].itertuples():
                if row.problem:
                    status.unsafe.append((row.path or row.ref, row.problem))
                elif not row.path or is_image_name(row.path):
                    status.missing_images.append(row.path or f"{key} {row.ref}")
                else:
                    status.not_images.append(row.path)
    if decode:
        state = _FileState(key, root)
        stats = {rel: (folder / rel).stat() for rel in images}
        todo = [rel for rel in images if not state.get(rel, stats[rel]).get("decoded")]
        for rel in tqdm(todo, desc=f"{key}: checking images", unit="file", disable=not progress or not todo):
            try:
                read_image(folder / rel, size=(64, 64))
                state.put(rel, stats[rel], decoded=True)
            except ImageError as exc:
                status.undecodable.append((_rel_to_data(folder / rel, root), exc.reason))
        if todo:
            state.save()
    return status


@dataclass
class FetchReport:
    """The outcome of :func:`fetch` or :func:`verify` for the sources asked for."""

    statuses: list[SourceStatus]
    seconds: float
    report_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when every source asked for is in place and usable (warnings allowed)."""
        return not any(s.problems() for s in self.statuses)

    @property
    def copied(self) -> int:
        return sum(s.stats.copied for s in self.statuses)

    def table(self) -> str:
        """A small fixed-width table: one line per source."""
        head = f"{'source':<10} {'origin':<16} {'copied':>6} {'skipped':>7} {'images':>11} {'missing':>7} " \
               f"{'bad':>4}  status"
        lines = [head, "-" * len(head)]
        for s in self.statuses:
            state = "MISSING" if not s.in_place else "ERROR" if s.problems() else "warning" if s.warnings() else "ok"
            lines.append(f"{s.key:<10} {s.stats.origin or '-':<16} {s.stats.copied:>6} {s.stats.skipped:>7} "
                         f"{f'{s.n_present}/{s.n_expected}':>11} {len(s.missing_images):>7} "
                         f"{len(s.undecodable):>4}  {state}")
        lines.append("(images: present/expected upstream; missing: metadata rows whose image is absent; "
                     "bad: images that do not decode)")
        return "\n".join(lines)

    def summary(self) -> str:
        """The table, the warnings and problems, and one closing line."""
        lines = [self.table()]
        lines += [f"warning: {w}" for s in self.statuses for w in s.warnings()]
        lines += [f"error: {p}" for s in self.statuses for p in s.problems()]
        n_files = sum(s.n_present for s in self.statuses)
        names = f"All {len(self.statuses)} sources" if len(self.statuses) > 1 else f"Source {self.statuses[0].key}"
        if self.ok:
            what = "nothing to copy, " if self.copied == 0 else f"{self.copied} file(s) copied, "
            lines.append(f"{names} in place ({n_files:,} image files; {what}"
                         f"{sum(len(s.warnings()) for s in self.statuses)} warning(s)) in {self.seconds:.1f} s.")
        else:
            bad = [s.key for s in self.statuses if s.problems()]
            lines.append(f"Not in place: {', '.join(bad)}. Fix: cxr-data fetch --source {' --source '.join(bad)} "
                         "(Kaggle needs credentials, see above; or add --mirror DIR).")
        return "\n".join(lines)


def _write_report(statuses: list[SourceStatus], root: Path | None) -> Path:
    """Rewrite ``raw/fetch_report.csv``: rows of the sources just checked replace their old rows."""
    path = paths.raw_dir(root) / REPORT_NAME
    fields = ["source", "path", "problem", "detail"]
    keep = []
    checked = {s.key for s in statuses}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            keep = [r for r in csv.DictReader(f) if r.get("source") not in checked]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(keep + [r for s in statuses for r in s.report_rows()])
    atomic.write_text(path, buf.getvalue())
    return path


def _keys(keys: Iterable[str] | None) -> list[str]:
    keys = list(dict.fromkeys(keys or SOURCES))
    for k in keys:
        get_source(k)
    return keys


def verify(keys: Iterable[str] | None = None, root: Path | None = None, progress: bool = True) -> FetchReport:
    """Check the sources on disk without fetching anything; writes ``raw/fetch_report.csv``."""
    t0 = time.perf_counter()
    statuses = [verify_source(k, root, progress) for k in _keys(keys)]
    report = FetchReport(statuses, time.perf_counter() - t0)
    if paths.raw_dir(root).is_dir():
        report.report_path = _write_report(statuses, root)
    return report


def fetch(keys: Iterable[str] | None = None, root: Path | None = None,
          mirror: str | os.PathLike[str] | None = None, progress: bool = True, workers: int = 8,
          github_api: str = GITHUB_API, github_raw: str = GITHUB_RAW) -> FetchReport:
    """Fetch the sources ``keys`` (default: all four) into ``<data>/raw`` and verify them.

    Args:
        keys: source keys (``cohen``, ``figure1``, ``actualmed``, ``kaggle``).
        root: data root (default ``CXR_DATA_DIR``).
        mirror: local mirror in upstream layout; default ``CXR_DATA_MIRROR``; ``None`` and no
            variable: GitHub and Kaggle.
        progress: show tqdm progress bars (on stderr).
        workers: parallel downloads from GitHub.
        github_api, github_raw: base URLs (tests point them at a local server).

    Returns:
        A :class:`FetchReport`; ``report.ok`` is False when a source is not usable, and
        ``report.summary()`` says what is missing and the command to fix it.

    Raises:
        MirrorError: ``mirror`` (or ``CXR_DATA_MIRROR``) is not a folder.
    """
    t0 = time.perf_counter()
    keys = _keys(keys)
    mirror_path = paths.mirror_dir(mirror)
    if mirror_path is not None and not mirror_path.is_dir():
        where = "--mirror" if mirror else "CXR_DATA_MIRROR"
        raise MirrorError(f"Mirror folder {mirror_path} (from {where}) does not exist or is not a folder.")
    statuses = []
    for key in keys:
        try:
            stats, error = fetch_source(key, root, mirror_path, progress, workers, github_api, github_raw), None
        except FetchError as exc:
            stats, error = CopyStats(origin="mirror" if mirror_path else "upstream"), f"{key}: {exc}"
        status = verify_source(key, root, progress)
        status.stats, status.fetch_error = stats, error
        status.unsafe = stats.unsafe + status.unsafe
        status.failed = stats.failed
        statuses.append(status)
    report = FetchReport(statuses, time.perf_counter() - t0)
    report.report_path = _write_report(statuses, root)
    return report
