#!/usr/bin/env python3
"""Measure the course's training against the compute it feeds, side by side, in one run.

    python tools/benchmark.py epochs                    # whole epochs of both recipes (about 10 min here)
    python tools/benchmark.py epochs --subset 256       # the same, on 256 training images (a quick check)
    python tools/benchmark.py pipeline                  # the input pipeline against one training step

``epochs`` times, for each recipe (``paper``, ``improved``), the second epoch of three loops over the
same training images with the same network, each in a fresh Python process, one after the other:

1. ``bare``: Keras ``fit`` on the cached images as NumPy arrays: no augmentation, no validation, no
   callbacks, nothing written (the compute bound);
2. ``course``: an epoch of :func:`cxr_utils.train.train_recipe` as a run does it: input pipeline with
   the recipe's augmentation, validation, history, best checkpoint and backup
   (``history.csv`` column ``wall_seconds``), with TensorFlow's op determinism on;
3. ``course, no determinism``: the same with ``deterministic=False``.

It prints ``course / bare`` (the course's overhead; the aim is at most 1.10) and ``deterministic /
not`` (what determinism costs). The second epoch is timed, so graph tracing and cache building are
left out. Timings vary with what else the machine is doing: compare ratios measured in one run.

``pipeline`` reports images per second of the cached pipeline (no augmentation, ``paper``,
``recommended``), of the paper's own per-epoch pipeline (decode every JPEG file each epoch) and of a
training step of the paper's network on in-memory arrays, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from cxr_utils.notebook import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # TensorFlow's load-time CUDA lines would bury the figures

from cxr_utils import augment, data, label_indices, paths  # noqa: E402

CHILD = "--child"


# ---------------------------------------------------------------------------------------------
# epochs: one measurement per fresh process


def bare_epoch(recipe: str, subset: int | None, image_size: int | None) -> float:
    """Seconds of the second epoch of plain ``fit`` on the recipe's network over the cached training images."""
    import keras

    from cxr_utils import preprocess, train

    config = train.resolve_config(recipe, subset=subset, image_size=image_size)
    keras.utils.set_random_seed(0)
    x, y = data.load_split("train", config["image_size"], config["channels"], subset=subset)
    x, y = preprocess.scale(x), np.eye(3, dtype=np.float32)[y]
    model = train.build_model(config)
    train.compile_model(model, config, int(np.ceil(len(x) / config["batch_size"])))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=config["batch_size"], epochs=1, verbose=0)
        times.append(time.perf_counter() - t0)
    return times[-1]


def course_epoch(recipe: str, subset: int | None, image_size: int | None, deterministic: bool) -> float:
    """Seconds (``wall_seconds``) of the second epoch of a real two-epoch run of ``recipe`` (temporary runs folder)."""
    import pandas as pd

    from cxr_utils import train

    with tempfile.TemporaryDirectory(prefix="cxr-bench-runs-") as tmp:
        os.environ["CXR_RUNS_DIR"] = tmp
        folder = train.train_recipe(recipe, "bench", epochs=2, subset=subset, image_size=image_size, verbose=0,
                                    deterministic=deterministic)
        return float(pd.read_csv(folder / "history.csv")["wall_seconds"].iloc[1])


def _child(argv: list[str]) -> None:
    kind, recipe, subset, size = argv
    subset_, size_ = (int(subset) or None), (int(size) or None)
    if kind == "bare":
        seconds = bare_epoch(recipe, subset_, size_)
    else:
        seconds = course_epoch(recipe, subset_, size_, deterministic=kind == "course")
    print(json.dumps({"seconds": seconds}))


def measure(kind: str, recipe: str, subset: int | None, image_size: int | None) -> float:
    """Run one measurement in a fresh Python process (so determinism, once on, does not leak into the next)."""
    cmd = [sys.executable, __file__, CHILD, kind, recipe, str(subset or 0), str(image_size or 0)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step {kind} {recipe} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def cmd_epochs(args: argparse.Namespace) -> int:
    n = int((data.load_manifest()["split"] == "train").sum())
    print(f"second epoch of each loop, {args.subset or n} training images; data dir {paths.data_dir()}")
    print(f"{'recipe':<10} {'bare s':>8} {'course s':>9} {'no-det s':>9} {'course/bare':>12} {'det/no-det':>11}")
    worst = 0.0
    for recipe in args.recipes:
        bare = measure("bare", recipe, args.subset, args.image_size)
        course = measure("course", recipe, args.subset, args.image_size)
        loose = measure("course-nondeterministic", recipe, args.subset, args.image_size)
        ratio = course / bare
        worst = max(worst, ratio)
        print(f"{recipe:<10} {bare:8.1f} {course:9.1f} {loose:9.1f} {ratio:12.2f} {course / loose:11.2f}", flush=True)
    print(f"course / bare at most 1.10: {'met' if worst <= 1.10 else 'MISSED'} (worst {worst:.2f})")
    return 0


# ---------------------------------------------------------------------------------------------
# pipeline: the input pipeline against one training step


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
    """The paper's per-epoch input pipeline: decode every JPEG file each epoch, then the script's augmentation.

    The augmentation is :data:`cxr_utils.augment.POLICIES` ``"paper"`` (flip, brightness, contrast,
    saturation, resize 96, crop 80) applied to the freshly decoded full-size image, as the script did.
    """
    import tensorflow as tf

    def load(path, label):
        return tf.io.decode_jpeg(tf.io.read_file(path), channels=3), label  # also decodes PNG data, as TF does

    ds = tf.data.Dataset.from_tensor_slices((files, labels.astype(np.int32)))
    ds = ds.shuffle(len(files), seed=seed).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    ds = augment.augment_dataset(ds, "paper", 80, seed)
    return ds.map(lambda x, y: (x, tf.one_hot(y, 3))).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def time_training_step(steps: int, batch_size: int = 32) -> float:
    """Images/s of ``train_on_batch`` of the paper's model on random in-memory arrays."""
    from cxr_utils import models

    return models.training_throughput(models.paper_dcnn(), batch_size=batch_size, steps=steps)


def cmd_pipeline(args: argparse.Namespace) -> int:
    manifest = data.load_manifest()
    n_train = int((manifest["split"] == "train").sum())
    limit = args.images or n_train

    def report(name: str, value: str, note: str = "") -> None:
        print(f"{name:<34} {value:>18}  {note}", flush=True)

    print(f"{len(manifest)} curated images ({n_train} train); data dir {paths.data_dir()}\n")
    with tempfile.TemporaryDirectory(prefix="cxr-bench-") as tmp:
        t0 = time.perf_counter()
        data.load_cache(80, 3, manifest, cache_root=Path(tmp), use_memory=False, progress=False)
        build = time.perf_counter() - t0
        report("cache build 80px (2 processes)", f"{build:.1f} s", f"{_rate(len(manifest), build):.0f} img/s")
        t0 = time.perf_counter()
        data.load_cache(80, 3, manifest, cache_root=Path(tmp), use_memory=False, progress=False)
        size_mb = sum(p.stat().st_size for p in Path(tmp).glob("*.npz")) / 1e6
        report("cache load 80px", f"{time.perf_counter() - t0:.2f} s", f"{size_mb:.0f} MB file, SHA-256 checked")
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
    n, sec = time_pipeline(paper_file_pipeline([str(base / r) for r in rel], label_indices(train["label"])), limit)
    report("paper's per-epoch pipeline", f"{_rate(n, sec):.0f} img/s", f"{n} images decoded from files")
    step = time_training_step(args.steps)
    report("training step paper_dcnn", f"{step:.1f} img/s", f"batch 32, {args.steps} steps")
    for policy, rate in pipe.items():
        report(f"  pipeline/step ({policy or 'none'})", f"{rate / step:.0f}x",
               f"target >= 5x: {'met' if rate / step >= 5 else 'MISSED'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == CHILD:
        _child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_ep = sub.add_parser("epochs", help="whole epochs: bare fit vs the course's loop, for each recipe")
    p_ep.add_argument("--recipes", nargs="+", default=["paper", "improved"])
    p_ep.add_argument("--subset", type=int, default=None, help="training images (default: the whole train split)")
    p_ep.add_argument("--image-size", type=int, default=None, help="input size (default: each recipe's)")
    p_ep.set_defaults(func=cmd_epochs)
    p_pipe = sub.add_parser("pipeline", help="the input pipeline against one training step")
    p_pipe.add_argument("--images", type=int, default=0, help="images per pipeline pass (default: the train split)")
    p_pipe.add_argument("--steps", type=int, default=5, help="timed training steps of batch 32")
    p_pipe.add_argument("--mirror", help="mirror folder for the paper's file pipeline (default: the data dir's raw/)")
    p_pipe.set_defaults(func=cmd_pipeline)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
