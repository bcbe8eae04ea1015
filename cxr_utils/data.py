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
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cxr_utils import CLASSES, atomic, label_indices, paths, preprocess
from cxr_utils.images import ImageError

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label", "source", "patient_id", "view", "split")
"""Columns every manifest must have (``cxr-data curate`` writes them, and maybe more)."""

TARGETS: dict[str, tuple[str, ...]] = {"label": CLASSES, "source": ("cohen", "figure1", "actualmed", "kaggle")}
"""What a pipeline can teach a network to predict, and its classes in order: the class (``label``, the course's
task) or the collection an image came from (``source``, a shortcut experiment of lesson 08)."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The three splits; ``test`` is never augmented and never used for model selection."""

CACHE_VERSION = 1
"""Bumped whenever the cache layout or the decoding changes, so old cache files are not read."""

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


def manifest_sha256(manifest: pd.DataFrame) -> str:
    """Return the SHA-256 of the manifest's content (every column, row order included), as its CSV text.

    A run records it (:func:`cxr_utils.train.data_fingerprint`), so it can tell when the data changed.
    """
    return hashlib.sha256(manifest.to_csv(index=False, lineterminator="\n").encode("utf-8")).hexdigest()


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


def _digest(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def _write_cache(path: Path, images: np.ndarray, meta: dict) -> None:
    """Write ``images`` and ``meta`` to ``path`` atomically."""
    with atomic.replacing(path) as tmp:
        np.savez(tmp, images=images, meta=np.array(json.dumps(meta)))


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
            images = preprocess.read_many([root / p for p in df["path"]], int(image_size), channels,
                                          workers=workers, progress=progress)
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
    target: str = "label",
) -> tuple[np.ndarray, np.ndarray]:
    """Return the images and labels of one split, from the cache (built on first use).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: height and width in pixels.
        channels: 1 or 3.
        manifest: a DataFrame, a manifest path, or None for the default manifest.
        subset: take at most this many images, stratified by class and chosen with ``seed``.
        seed: seed of the subset choice.
        target: what the labels are (:data:`TARGETS`): the class (default) or the source collection.

    Returns:
        ``(images, labels)``: ``uint8`` ``[N, H, W, C]`` and ``int64`` ``[N]`` indices into
        ``TARGETS[target]`` (for the class, :data:`cxr_utils.CLASSES`), in manifest order.
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
    if target != "label":
        if target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}, got {target!r}")
        index = {name: i for i, name in enumerate(TARGETS[target])}
        labels = np.array([index[v] for v in df[target].iloc[rows]], dtype=np.int64)
    return images[rows], labels


# ---------------------------------------------------------------------------------------------
# tf.data


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of a training run's epoch ``epoch`` (shuffle and augmentation), from ``seed`` and ``epoch`` alone."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint32)[0])


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
    epoch: int | None = None,
    class_weights: dict[int, float] | None = None,
    target: str = "label",
    extra: tuple[list, np.ndarray] | None = None,
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
        shuffle: shuffle the images; default True for ``"train"`` only.
        seed: seed of the shuffle, the subset and the augmentation: the same seed gives the same
            batches.
        epoch: None (lessons): every pass over the dataset reshuffles and re-augments, so a multi-epoch
            ``fit`` sees each epoch differently. A number (training runs, which build one pipeline per
            epoch): this epoch's shuffle and augmentation are a function of ``(seed, epoch)`` alone
            (:func:`epoch_seed`) and repeat on every pass, which is what makes a resumed run exact.
        class_weights: ``{class index: weight}``: each batch then carries a third element, every image's
            weight (what Keras' ``fit(class_weight=...)`` computes; carried by the data, it works the same
            under every ``tf.distribute`` strategy).
        target: what the labels are (:data:`TARGETS`): the class, or (lesson 08) the source collection.
        extra: ``(files, labels)``, images from outside the manifest added to the ``"train"`` split
            (read at the size the policy reads, :func:`cxr_utils.preprocess.read_many`).
        subset: at most this many images, stratified by class (see :func:`load_split`).
        one_hot: labels as float32 one-hot ``[B, 3]`` (True) or int32 ``[B]``.
        manifest: a DataFrame, a manifest path, or None for the default manifest.
        drop_remainder: drop the last, smaller batch.

    Returns:
        A dataset of ``(images, labels)`` (and ``weights`` with ``class_weights``): float32 images in [0, 1]
        ``[B, H, W, C]``, labels, float32 weights ``[B]``.

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
    x, y = load_split(split, load_size, channels, manifest, subset, seed, target)
    if extra is not None:
        if split != "train":
            raise ValueError(f"extra images are for the 'train' split only, not '{split}'")
        files, labels = extra
        x = np.concatenate([x, preprocess.read_many(files, load_size, channels)])
        y = np.concatenate([y, np.asarray(labels, dtype=y.dtype)])
    shuffle = (split == "train") if shuffle is None else shuffle
    n_classes = len(TARGETS[target])
    again = epoch is None  # reshuffle and re-augment on every pass
    pipeline_seed = seed if again else epoch_seed(seed, epoch)

    ds = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=pipeline_seed, reshuffle_each_iteration=again)
    if policy is not None:
        ds = aug.augment_dataset(ds, policy, image_size, pipeline_seed, rerandomize=again)  # a seed per image
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(lambda a, b: (preprocess.scale(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    if class_weights is not None:
        table = tf.constant([float(class_weights.get(k, 1.0)) for k in range(n_classes)], dtype=tf.float32)
        ds = ds.map(lambda a, b: (a, b, tf.gather(table, b)))
    if one_hot:
        ds = ds.map(lambda a, b, *w: (a, tf.one_hot(b, n_classes, dtype=tf.float32), *w))
    return ds.prefetch(tf.data.AUTOTUNE)
