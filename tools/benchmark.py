#!/usr/bin/env python3
"""Measure the input pipeline against the compute it feeds, side by side, in one run.

    python tools/benchmark.py                     # full curated set, train split
    python tools/benchmark.py --steps 5 --images 2000 --mirror DIR

Reports images per second of:

1. ``cache build`` / ``cache load``: decoding and resizing the whole curated set once (2 processes)
   into a fresh temporary cache, and reading that cache file back (checksum included);
2. ``pipeline <policy>``: one pass of ``make_dataset("train", augment=policy)`` at 80x80, batch 32
   (cached images, augmentation, batching), for no augmentation, ``paper`` and ``recommended``;
3. ``paper's per-epoch pipeline``: what the paper's script did every epoch: read each JPEG file,
   ``tf.io.decode_jpeg`` (3 channels), scale to [0, 1], flip, brightness, contrast, saturation,
   resize to 96, random crop 80, batch 32 (on the mirror's files, which are downscaled to 256 px:
   the original full-size files decode several times slower);
4. ``training step``: ``train_on_batch`` of ``cxr_utils.models.paper_dcnn()`` on in-memory arrays
   (batch 32, Adam, categorical cross-entropy), the compute bound; reported as unavailable when
   the model is missing.

The pipeline passes once over ``--images`` training images after one warm-up batch. Numbers vary
with what else runs on the machine: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from cxr_utils import data, paths  # noqa: E402


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def time_pipeline(ds, limit: int) -> tuple[int, float]:
    """Iterate ``ds`` (after one warm-up batch) until ``limit`` images; return (images, seconds)."""
    it = iter(ds)
    next(it)
    n, t0 = 0, time.perf_counter()
    for x, _ in it:
        n += int(x.shape[0])
        if n >= limit:
            break
    return n, time.perf_counter() - t0


def paper_file_pipeline(files: list[str], labels: np.ndarray, batch_size: int = 32, seed: int = 0):
    """The paper's per-epoch input pipeline, re-implemented: decode every file, augment, resize, crop."""
    import tensorflow as tf

    def load(path, label):
        img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)  # also decodes PNG data, as TF does
        img = tf.image.convert_image_dtype(img, tf.float32)
        img = tf.image.random_flip_left_right(img)
        img = tf.image.random_brightness(img, 0.1)
        img = tf.image.random_contrast(img, 0.1, 0.2)
        img = tf.image.random_saturation(img, 0, 5)
        img = tf.image.resize(img, [96, 96])
        img = tf.image.random_crop(img, [80, 80, 3])
        return img, tf.one_hot(label, 3)

    ds = tf.data.Dataset.from_tensor_slices((files, labels.astype(np.int32)))
    ds = ds.shuffle(len(files), seed=seed).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def time_training_step(steps: int, batch_size: int = 32) -> tuple[float | None, str]:
    """Images/s of ``train_on_batch`` of the paper's model on random in-memory arrays, or None and why."""
    try:
        from cxr_utils.models import paper_dcnn
    except ImportError as exc:
        return None, f"unavailable ({exc})"
    import keras

    keras.utils.set_random_seed(0)
    model = paper_dcnn()
    model.compile(optimizer=keras.optimizers.Adam(4e-4), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((batch_size, 80, 80, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, batch_size), 3)
    model.train_on_batch(x, y)  # warm-up: builds and traces the step
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return _rate(steps * batch_size, time.perf_counter() - t0), f"{model.count_params():,} parameters"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=0, help="images per pipeline pass (default: the train split)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps of batch 32")
    parser.add_argument("--mirror", help="mirror folder for the paper's file pipeline (default: the data dir's raw/)")
    parser.add_argument("--skip-cache-build", action="store_true", help="use the data dir's cache, don't time a build")
    args = parser.parse_args(argv)

    manifest = data.load_manifest()
    n_train = int((manifest["split"] == "train").sum())
    limit = args.images or n_train
    rows: list[tuple[str, str, str]] = []

    def report(name: str, value: str, note: str = "") -> None:
        rows.append((name, value, note))
        print(f"{name:<34} {value:>18}  {note}", flush=True)

    print(f"{len(manifest)} curated images ({n_train} train); data dir {paths.data_dir()}\n")
    if not args.skip_cache_build:
        with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
            for size in (80,):
                t0 = time.perf_counter()
                data.load_cache(size, 3, manifest, cache_root=Path(tmp), use_memory=False, progress=False)
                build = time.perf_counter() - t0
                report(f"cache build {size}px (2 processes)", f"{build:.1f} s",
                       f"{_rate(len(manifest), build):.0f} img/s")
                t0 = time.perf_counter()
                data.load_cache(size, 3, manifest, cache_root=Path(tmp), use_memory=False, progress=False)
                load = time.perf_counter() - t0
                size_mb = sum(p.stat().st_size for p in Path(tmp).glob("*.npz")) / 1e6
                report(f"cache load {size}px", f"{load:.2f} s", f"{size_mb:.0f} MB file, SHA-256 checked, "
                       f"target < 2 s: {'met' if load < 2 else 'MISSED'}")

    # Build the caches the pipelines read (80 px; 96 px for the paper's policy) before timing them.
    data.load_cache(80, 3, manifest)
    data.load_cache(96, 3, manifest)
    pipe = {}
    for policy in (None, "paper", "recommended"):
        ds = data.make_dataset("train", image_size=80, batch_size=32, augment=policy, seed=0)
        n, sec = time_pipeline(ds, limit)
        pipe[policy] = _rate(n, sec)
        report(f"pipeline {policy or 'no augmentation'}", f"{pipe[policy]:.0f} img/s", f"{n} images, cached")

    train = manifest[manifest["split"] == "train"]
    base = Path(args.mirror) if args.mirror else paths.data_dir()
    rel = [p.removeprefix("raw/") if args.mirror else p for p in train["path"]]
    files = [str(base / r) for r in rel]
    ds = paper_file_pipeline(files, data.label_indices(train["label"]))
    n, sec = time_pipeline(ds, limit)
    report("paper's per-epoch pipeline", f"{_rate(n, sec):.0f} img/s", f"{n} images decoded from files")

    step, note = time_training_step(args.steps)
    if step is None:
        report("training step paper_dcnn", "n/a", note)
    else:
        report("training step paper_dcnn", f"{step:.1f} img/s", f"batch 32, {args.steps} steps, {note}")
        for policy, rate in pipe.items():
            ratio = rate / step
            epoch_slowdown = step / rate * 100
            report(f"  pipeline/step ({policy or 'none'})", f"{ratio:.0f}x",
                   f"target >= 5x: {'met' if ratio >= 5 else 'MISSED'}; "
                   f"serial worst case +{epoch_slowdown:.1f} % on an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
