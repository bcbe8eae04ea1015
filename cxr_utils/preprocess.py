"""From an image file to what a network reads: the course's one preprocessing, in two steps.

1. :func:`read` decodes a file (any format :func:`cxr_utils.images.read_image` reads) and resizes
   it to ``image_size`` x ``image_size`` with ``channels`` channels: ``uint8`` pixels. This is what
   the decoded-image cache stores (:mod:`cxr_utils.data`); :func:`read_many` reads many files, in
   parallel processes if asked.
2. :func:`scale` maps those pixels to ``float32`` in [0, 1] (``pixels / 255``), for NumPy arrays
   and TensorFlow tensors alike. The training pipeline, augmented or not, applies it to cached
   pixels; evaluation, the lessons and the prediction command apply it too.

:func:`model_input` does both for a list of files: it is how a file that was never curated (an
external image, one's own X-ray) becomes model input exactly as a test image does. A run folder
records the ``image_size`` and ``channels`` it was trained with (:func:`cxr_utils.runs.preprocessing`).
Anything else the network does to its input (per-image standardisation) is a layer of the model,
so it travels with the weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cxr_utils.images import read_image

_CHUNK = 64  # images per task when decoding in parallel


def read(path: str | os.PathLike[str], image_size: int, channels: int = 3) -> np.ndarray:
    """Decode ``path`` and resize it to a square: ``uint8`` ``[image_size, image_size, channels]``.

    Resizing is bilinear and does not keep the aspect ratio, as the paper's ``tf.image.resize`` did.

    Raises:
        cxr_utils.images.ImageError: the file is missing, not an image, truncated or too large.
    """
    img = read_image(path, channels=channels, size=(int(image_size), int(image_size)))
    return img[..., None] if channels == 1 else img


def _read_chunk(files: list[str], image_size: int, channels: int) -> np.ndarray:
    """:func:`read` every file of ``files`` into one array (runs in a worker process)."""
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    for i, f in enumerate(files):
        out[i] = read(f, image_size, channels)
    return out


def read_many(files: Sequence[str | os.PathLike[str]], image_size: int, channels: int = 3, *,
              workers: int = 1, progress: bool = False) -> np.ndarray:
    """:func:`read` every file: ``uint8`` ``[N, image_size, image_size, channels]`` in the order of ``files``.

    Args:
        files: image files, any format.
        image_size: output height and width in pixels.
        channels: 1 (grey) or 3 (RGB, as the paper's script decoded).
        workers: processes to decode with (1 decodes in this process; small jobs always use one).
        progress: show a progress bar.

    Raises:
        cxr_utils.images.ImageError: a file is missing or cannot be decoded (the message names it).
    """
    files = [str(f) for f in files]
    image_size, channels = int(image_size), int(channels)
    chunks = [files[i : i + _CHUNK] for i in range(0, len(files), _CHUNK)]
    out = np.empty((len(files), image_size, image_size, channels), dtype=np.uint8)
    bar = tqdm(total=len(files), desc=f"decoding {image_size}x{image_size}x{channels}", unit="img",
               disable=not progress, mininterval=1.0)
    pos = 0
    with bar:
        if workers <= 1 or len(chunks) < 4:
            results = (_read_chunk(c, image_size, channels) for c in chunks)
            for arr in results:
                out[pos : pos + len(arr)] = arr
                pos += len(arr)
                bar.update(len(arr))
        else:
            # "spawn": the caller may already run TensorFlow threads, which fork() does not copy safely.
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                n = len(chunks)
                for arr in pool.map(_read_chunk, chunks, [image_size] * n, [channels] * n):
                    out[pos : pos + len(arr)] = arr
                    pos += len(arr)
                    bar.update(len(arr))
    return out


def scale(pixels: Any) -> Any:
    """Map ``uint8`` pixels to ``float32`` in [0, 1] (divide by 255).

    Takes a NumPy array (returns one) or a TensorFlow tensor (returns one, for ``tf.data`` pipelines);
    both divide in float32, so the two give the same numbers bit for bit.
    """
    if isinstance(pixels, np.ndarray):
        return pixels.astype(np.float32) / np.float32(255.0)
    import tensorflow as tf

    return tf.cast(pixels, tf.float32) / 255.0


def model_input(files: Sequence[str | os.PathLike[str]], image_size: int, channels: int = 3, *,
                workers: int = 1, progress: bool = False) -> np.ndarray:
    """Return the model input for ``files``: :func:`read` then :func:`scale`, ``float32`` ``[N, S, S, C]``.

    ``workers`` > 1 decodes in that many processes (:func:`read_many`).
    """
    return scale(read_many(files, image_size, channels, workers=workers, progress=progress))
