"""From the manifest to batches: decode once, cache, and feed ``tf.data`` fast.

The paper's script decoded every full-size JPEG again in every epoch. At 80x80 pixels the whole
curated set (about 6,600 images) is ~130 MB of ``uint8``, so we decode and resize each image
**once** per ``(image size, channels)``, keep the result in a cache file under
:func:`cxr_utils.paths.cache_dir`, and from then on an epoch only reads memory.

- :func:`load_manifest` reads and validates ``curated/manifest.csv``.
- :func:`load_cache` returns the decoded images of every manifest row, building the cache file
  when it is missing, stale or corrupt.
- :func:`load_split` gives ``uint8`` images ``[N, H, W, C]`` and ``int`` labels for one split.
- :func:`make_dataset` gives the ``tf.data.Dataset`` every later lesson trains and evaluates on.

The cache file is keyed by the manifest's content, the size and modification time of every image
file, the image size and the number of channels, so a changed manifest, a re-fetched image or a
new size never reads a stale cache. It stores a SHA-256 of its pixels; a file that fails the
check (truncated, overwritten) is rebuilt, never used. It is written to a temporary file and
renamed, so an interrupted build leaves no half-written cache behind.

TensorFlow is imported only by :func:`make_dataset`, so the arrays can be used without it.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from cxr_utils import CLASSES, paths
from cxr_utils.images import ImageError, read_image

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "source", "patient_id", "view", "split")
"""Columns every manifest must have (``cxr-data curate`` writes them, and maybe more)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The three splits; ``test`` is never augmented and never used for model selection."""

CACHE_VERSION = 1
"""Bumped whenever the cache layout or the decoding changes, so old cache files are not read."""

_CHUNK = 64  # images per task when decoding in parallel
_MEMORY: dict[tuple, np.ndarray] = {}  # in-process copy of the last cache read


class ManifestError(ValueError):
    """The manifest is missing or malformed; the message names the file and the fix."""


class CacheError(Exception):
    """A cache file is unreadable, corrupt or does not match what was asked for."""


# ---------------------------------------------------------------------------------------------
# Manifest


def load_manifest(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read and validate the curated manifest.

    Args:
        path: a manifest CSV; default :func:`cxr_utils.paths.manifest_path` (``$CXR_DATA_DIR/curated/manifest.csv``).

    Returns:
        The manifest as a DataFrame (row order kept), with at least the columns
        :data:`REQUIRED_COLUMNS`; ``path`` is relative to the data directory.

    Raises:
        ManifestError: the file is missing, lacks a required column, or has an unknown label or
            split, or an empty path. The message names the file and says how to fix it.
    """
    path = Path(path) if path is not None else paths.manifest_path()
    fix = "run `cxr-data fetch` and then `cxr-data curate` to (re)create it"
    if not path.is_file():
        raise ManifestError(f"Manifest '{path}' not found; {fix} (or set CXR_DATA_DIR to the data folder).")
    df = pd.read_csv(path, dtype={"patient_id": str, "path": str})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"Manifest '{path}' lacks the column(s) {missing}; {fix}.")
    _validate_rows(df, str(path), fix)
    return df


def _validate_rows(df: pd.DataFrame, where: str, fix: str) -> None:
    """Raise :class:`ManifestError` when labels, splits or paths are not what the course expects."""
    bad_label = sorted(set(df["label"].dropna().astype(str)) - set(CLASSES))
    if bad_label or df["label"].isna().any():
        found = bad_label or ["<empty>"]
        raise ManifestError(f"Manifest '{where}' has label(s) {found} outside {list(CLASSES)}; {fix}.")
    bad_split = sorted(set(df["split"].dropna().astype(str)) - set(SPLITS))
    if bad_split or df["split"].isna().any():
        found = bad_split or ["<empty>"]
        raise ManifestError(f"Manifest '{where}' has split(s) {found} outside {list(SPLITS)}; {fix}.")
    if df["path"].isna().any() or (df["path"].astype(str).str.strip() == "").any():
        raise ManifestError(f"Manifest '{where}' has rows with an empty path; {fix}.")
    if df["path"].duplicated().any():
        dup = df.loc[df["path"].duplicated(), "path"].iloc[0]
        raise ManifestError(f"Manifest '{where}' lists '{dup}' more than once; {fix}.")


def _as_manifest(manifest: pd.DataFrame | str | os.PathLike[str] | None) -> pd.DataFrame:
    """Accept a DataFrame (validated), a manifest path, or None (the default manifest)."""
    if isinstance(manifest, pd.DataFrame):
        missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
        if missing:
            raise ManifestError(f"The manifest DataFrame lacks the column(s) {missing}; load it with load_manifest().")
        _validate_rows(manifest, "<DataFrame>", "fix the DataFrame or reload it with load_manifest()")
        return manifest
    return load_manifest(manifest)


def label_indices(labels: Sequence[str] | pd.Series) -> np.ndarray:
    """Map class names to indices into :data:`cxr_utils.CLASSES` (COVID-19 0, Normal 1, Pneumonia 2)."""
    index = {name: i for i, name in enumerate(CLASSES)}
    return np.array([index[str(v)] for v in labels], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Cache


def cache_key(manifest: pd.DataFrame, image_size: int, channels: int, root: Path | None = None) -> str:
    """Return the hex key of the cache for ``manifest`` at ``image_size`` x ``image_size`` x ``channels``.

    The key hashes the cache version, the size and channels, every manifest column (row order
    included) and the byte size and modification time of each image file, so any change to one
    of them names a different cache file.
    """
    root = root or paths.data_dir()
    h = hashlib.sha256(f"cxr-cache v{CACHE_VERSION} {int(image_size)}px {int(channels)}ch\n".encode())
    h.update(",".join(map(str, manifest.columns)).encode())
    h.update(pd.util.hash_pandas_object(manifest.astype(str), index=False).to_numpy().tobytes())
    for rel in manifest["path"]:
        try:
            st = os.stat(root / rel)
            h.update(f"{rel}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{rel}|missing\n".encode())
    return h.hexdigest()


def cache_path(
    manifest: pd.DataFrame, image_size: int, channels: int, cache_root: Path | None = None, root: Path | None = None
) -> Path:
    """Return the cache file for this manifest, size and channels (it may not exist yet)."""
    key = cache_key(manifest, image_size, channels, root)
    return (cache_root or paths.cache_dir(root)) / f"images_{int(image_size)}px_{int(channels)}ch_{key[:16]}.npz"


def _decode_many(files: list[str], image_size: int, channels: int) -> np.ndarray:
    """Decode and resize ``files`` into one ``uint8`` array ``[len(files), H, W, C]`` (runs in a worker)."""
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        img = read_image(f, channels=channels, size=(image_size, image_size))
        out[i] = img[..., None] if channels == 1 else img
    return out


def decode_images(
    files: Sequence[str | os.PathLike[str]],
    image_size: int,
    channels: int = 3,
    workers: int = 2,
    progress: bool = True,
) -> np.ndarray:
    """Decode ``files`` with :func:`cxr_utils.images.read_image`, resized to ``image_size`` squared.

    Args:
        files: image files, any format.
        image_size: output height and width in pixels.
        channels: 1 (grey) or 3 (RGB, as the paper's script decoded).
        workers: processes to decode with (1 decodes in this process). Small jobs use one.
        progress: show a tqdm progress bar.

    Returns:
        ``uint8`` array ``[N, image_size, image_size, channels]`` in the order of ``files``.

    Raises:
        cxr_utils.images.ImageError: a file is missing or cannot be decoded (the message names it).
    """
    files = [str(f) for f in files]
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    bar = tqdm(total=len(files), desc=f"decoding {image_size}x{image_size}x{channels}", unit="img",
               disable=not progress, mininterval=1.0)
    pos = 0
    with bar:
        if workers <= 1 or len(chunks) < 4:
            results = (_decode_many(c, image_size, channels) for c in chunks)
            for arr in results:
                out[pos : pos + len(arr)] = arr
                pos += len(arr)
                bar.update(len(arr))
        else:
            # "spawn": the caller may already run TensorFlow threads, which fork() does not copy safely.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                n = len(chunks)
                for arr in pool.map(_decode_many, chunks, [image_size] * n, [channels] * n):
                    out[pos : pos + len(arr)] = arr
                    pos += len(arr)
                    bar.update(len(arr))
    return out


def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def _write_cache(path: Path, images: np.ndarray, meta: dict) -> None:
    """Write ``images`` and ``meta`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, images=images, meta=np.array(json.dumps(meta)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(path: Path, key: str, count: int, image_size: int, channels: int) -> np.ndarray:
    """Read a cache file and check it completely; raise :class:`CacheError` on any mismatch."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            images = z["images"]
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or overwritten zip raises many different errors
        raise CacheError(f"cache file '{path.name}' is unreadable ({type(exc).__name__}: {exc})") from None
    expected = (count, image_size, image_size, channels)
    if meta.get("key") != key or meta.get("version") != CACHE_VERSION:
        raise CacheError(f"cache file '{path.name}' belongs to another manifest or version")
    if images.dtype != np.uint8 or images.shape != expected:
        got = f"{images.dtype}{list(images.shape)}"
        raise CacheError(f"cache file '{path.name}' holds {got}, expected uint8{list(expected)}")
    if _digest(images) != meta.get("sha256"):
        raise CacheError(f"cache file '{path.name}' fails its SHA-256 check")
    return images


def load_cache(
    image_size: int = 80,
    channels: int = 3,
    manifest: pd.DataFrame | str | os.PathLike[str] | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
    cache_root: Path | None = None,
    use_memory: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Return the decoded images of every manifest row, building (or rebuilding) the cache file if needed.

    Args:
        image_size: height and width in pixels.
        channels: 1 or 3.
        manifest: a DataFrame from :func:`load_manifest`, a manifest path, or None for the default.
        workers: decoding processes when the cache has to be built.
        progress: show a progress bar while building.
        cache_root: folder for the cache file (default :func:`cxr_utils.paths.cache_dir`).
        use_memory: reuse the arrays already read in this process for the same cache file.

    Returns:
        ``(images, manifest)``: ``uint8`` images ``[len(manifest), H, W, C]`` aligned with the rows of
        the (validated) manifest.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size!r}")
    df = _as_manifest(manifest)
    root = paths.data_dir()
    key = cache_key(df, image_size, channels, root)
    folder = cache_root or paths.cache_dir(root)
    path = folder / f"images_{int(image_size)}px_{int(channels)}ch_{key[:16]}.npz"
    mem_key = (str(path), key)
    if use_memory and mem_key in _MEMORY and path.is_file():
        return _MEMORY[mem_key], df

    images = None
    if path.is_file():
        try:
            images = _read_cache(path, key, len(df), int(image_size), channels)
        except CacheError as exc:
            warnings.warn(f"{exc}; rebuilding it.", stacklevel=2)
    if images is None:
        try:
            images = decode_images([root / p for p in df["path"]], int(image_size), channels, workers, progress)
        except ImageError as exc:
            raise ImageError(exc.path, f"{exc.reason}. It is listed in the manifest: re-run `cxr-data fetch` "
                             "and `cxr-data curate`") from None
        meta = {"version": CACHE_VERSION, "key": key, "image_size": int(image_size), "channels": channels,
                "count": len(df), "sha256": _digest(images)}
        _write_cache(path, images, meta)
        # Older caches of the same size and channels can never be valid again: remove them.
        for old in folder.glob(f"images_{int(image_size)}px_{int(channels)}ch_*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    images.setflags(write=False)  # shared between callers: nobody may change it in place
    _MEMORY.clear()  # keep one cache in memory per process (about 130 MB at 80x80x3)
    _MEMORY[mem_key] = images
    return images, df


def clear_memory() -> None:
    """Forget the arrays kept in this process, so the next call reads (and checks) the cache file again."""
    _MEMORY.clear()


# ---------------------------------------------------------------------------------------------
# Splits


def stratified_subset(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Return sorted indices of at most ``n`` items of ``labels``, keeping the class proportions.

    Classes get ``n * share`` items each (largest remainders first, at least one per class when
    ``n`` allows), chosen at random with ``seed``; the result keeps the original order.
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    if n <= 0:
        raise ValueError(f"subset must be a positive number of images, got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    take = np.minimum(np.floor(exact).astype(int), counts)
    if n >= len(classes):
        take = np.maximum(take, 1)
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < n:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:  # only possible after the "at least one" rule
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(chosen))


def load_split(
    split: str,
    image_size: int = 80,
    channels: int = 3,
    manifest: pd.DataFrame | str | os.PathLike[str] | None = None,
    subset: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the images and labels of one split, from the cache (built on first use).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: height and width in pixels.
        channels: 1 or 3.
        manifest: a DataFrame, a manifest path, or None for the default manifest.
        subset: take at most this many images, stratified by class and chosen with ``seed``.
        seed: seed of the subset choice.

    Returns:
        ``(images, labels)``: ``uint8`` ``[N, H, W, C]`` and ``int64`` ``[N]`` indices into
        :data:`cxr_utils.CLASSES`, in manifest order.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    images, df = load_cache(image_size, channels, manifest)
    rows = np.flatnonzero(df["split"].to_numpy() == split)
    if len(rows) == 0:
        raise ManifestError(f"The manifest has no '{split}' rows; run `cxr-data curate` to rebuild it.")
    labels = label_indices(df["label"].iloc[rows])
    if subset is not None:
        keep = stratified_subset(labels, int(subset), seed)
        rows, labels = rows[keep], labels[keep]
    return images[rows], labels


# ---------------------------------------------------------------------------------------------
# tf.data


def make_dataset(
    split: str,
    *,
    image_size: int = 80,
    channels: int = 3,
    batch_size: int = 32,
    augment: str | None = None,
    shuffle: bool | None = None,
    seed: int = 0,
    subset: int | None = None,
    one_hot: bool = True,
    manifest: pd.DataFrame | str | os.PathLike[str] | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Return the ``tf.data`` pipeline of one split: cached images, shuffle, augment, batch, prefetch.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: size in pixels of the images the model sees.
        channels: 1 or 3.
        batch_size: images per batch.
        augment: a policy name from :data:`cxr_utils.augment.POLICIES` (``"paper"``, ``"recommended"``)
            or None. Only allowed for ``"train"``: validation and test images are never augmented.
            A policy may read larger images than it returns (the paper's resizes to 96, crops 80).
        shuffle: reshuffle every epoch; default True for ``"train"`` only.
        seed: seed of the shuffle, the subset and the augmentation: the same seed gives the same
            batches, epoch after epoch (each epoch differs from the last).
        subset: at most this many images, stratified by class (see :func:`load_split`).
        one_hot: labels as float32 one-hot ``[B, 3]`` (True) or int32 ``[B]``.
        manifest: a DataFrame, a manifest path, or None for the default manifest.
        drop_remainder: drop the last, smaller batch.

    Returns:
        A dataset of ``(images, labels)``: float32 images in [0, 1] ``[B, H, W, C]`` and labels.

    Raises:
        ValueError: ``augment`` given for a split other than ``"train"``, or an unknown policy.
    """
    import tensorflow as tf

    from cxr_utils import augment as aug

    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    policy = None
    if augment is not None:
        if split != "train":
            raise ValueError(f"augment={augment!r} was asked for the '{split}' split; only 'train' is "
                             "augmented (validation and test images are always used as they are)")
        policy = aug.get_policy(augment)
    load_size = policy.input_size(image_size) if policy else image_size
    x, y = load_split(split, load_size, channels, manifest, subset, seed)
    shuffle = (split == "train") if shuffle is None else shuffle
    n_classes = len(CLASSES)

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if policy is not None:
        ds = aug.augment_dataset(ds, policy, image_size, seed)  # per-image seeds, new in each epoch
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
    if one_hot:
        ds = ds.map(lambda a, b: (a, tf.one_hot(b, n_classes, dtype=tf.float32)))
    return ds.prefetch(tf.data.AUTOTUNE)
