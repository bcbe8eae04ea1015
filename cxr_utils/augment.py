"""Training-time augmentation policies, selectable by name from :data:`POLICIES`.

- ``"paper"``: exactly what the author's script did (see ``shared/paper/NOTES.md``): random
  horizontal flip; random brightness, max delta 0.1; random contrast with a factor drawn from
  [0.1, 0.2] (which always *cuts* contrast to 10-20 %); random saturation in [0, 5] (no effect on
  grey images stored as RGB); the image resized to 96x96, then a random 80x80 crop. Test images
  are resized straight to 80x80, so training sees a 1.2x zoomed field of view that test never sees.
- ``"strong"``: the recommended geometry made larger (rotation +-15 degrees, zoom +-20 %, shift +-10 %)
  and a random gamma in [0.7, 1.4] instead of brightness and contrast (for networks that standardise
  each image, which undoes any brightness or contrast change). The augmentation of the ``improved``
  recipe (chosen as ``results/candidates/README.md`` tells).
- ``"recommended"``: what we suggest for chest X-rays: no flips (anatomy is lateralised: the heart
  is on the left, and an upside-down chest never occurs), a small rotation (+-5 degrees), zoom
  (+-10 %) and shift (+-5 %), moderate brightness (+-0.05) and contrast (factor 0.85-1.15). It reads
  images at the size it returns, so training and test share one field of view.

A policy declares the size of the images it reads (:meth:`Policy.input_size`): the paper's reads
96 px to return 80 px. :func:`cxr_utils.data.make_dataset` loads the cache at that size.

Inside the ``tf.data`` pipeline every random op is a *stateless* ``tf`` op driven by an explicit
per-image seed, so an augmented epoch is the same in every run with the same seed, whatever the
parallelism. Keras' preprocessing layers (``keras.layers.RandomContrast`` ...) draw from a stateful
seed generator instead; they fit inside a model, and :func:`keras_layers` builds the recommended
policy from them (with ``value_range=(0, 1)``: their default is 0..255, which on our [0, 1] images
would make every brightness change 255 times too large).

All policies take and return float32 images in [0, 1]; they clip at the end (the script did not
say whether it clipped; without clipping a brightness shift leaves values outside [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from cxr_utils.preprocess import scale


@dataclass(frozen=True)
class Policy:
    """A named augmentation policy.

    Attributes:
        name: the name in :data:`POLICIES`.
        description: one line on what it does.
        fn: ``fn(image, seed, image_size) -> image``; ``image`` float32 ``[H, W, C]`` in [0, 1] at
            :meth:`input_size`, ``seed`` an int ``[2]`` tensor, result float32 ``[image_size, image_size, C]``.
        input_scale: the images it reads are ``input_scale`` times larger than those it returns.
    """

    name: str
    description: str
    fn: Callable[[tf.Tensor, tf.Tensor, int], tf.Tensor]
    input_scale: float = 1.0

    def input_size(self, image_size: int) -> int:
        """Return the side in pixels of the images this policy reads to return ``image_size`` ones."""
        return int(round(image_size * self.input_scale))

    def apply(self, image: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
        """Augment one float32 image ``[H, W, C]`` in [0, 1] with an int ``[2]`` seed; return ``[S, S, C]``."""
        out = self.fn(image, seed, image_size)
        out = tf.clip_by_value(out, 0.0, 1.0)
        return tf.ensure_shape(out, [image_size, image_size, image.shape[-1]])


def _paper(image: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
    """The script's augmentation: flip, brightness 0.1, contrast [0.1, 0.2], saturation [0, 5], resize 96, crop 80."""
    s = tf.random.experimental.stateless_split(seed, num=5)
    channels = image.shape[-1]
    x = tf.image.stateless_random_flip_left_right(image, seed=s[0])
    x = tf.image.stateless_random_brightness(x, max_delta=0.1, seed=s[1])
    x = tf.image.stateless_random_contrast(x, lower=0.1, upper=0.2, seed=s[2])
    if channels == 3:  # saturation needs colour channels; on grey RGB it changes nothing
        x = tf.image.stateless_random_saturation(x, lower=0.0, upper=5.0, seed=s[3])
    big = int(round(image_size * 1.2))  # 96 for 80
    if image.shape[0] != big or image.shape[1] != big:
        x = tf.image.resize(x, [big, big])
    return tf.image.stateless_random_crop(x, size=[image_size, image_size, channels], seed=s[4])


def affine_matrix(angle: tf.Tensor, zoom: tf.Tensor, shift_x: tf.Tensor, shift_y: tf.Tensor, size: int) -> tf.Tensor:
    """Return the 8 projective-transform coefficients mapping output to input pixels.

    Rotation by ``angle`` (radians) and zoom by ``zoom`` (>1 magnifies) about the image centre,
    then a shift of ``(shift_x, shift_y)`` pixels, for a ``size`` x ``size`` image.
    """
    c = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    a0, a1, b0, b1 = cos, -sin, sin, cos
    a2 = c - shift_x - a0 * c - a1 * c
    b2 = c - shift_y - b0 * c - b1 * c
    zero = tf.zeros_like(angle)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero])


def _random_affine(image: tf.Tensor, seed: tf.Tensor, image_size: int, degrees: float, zoom: float,
                   shift: float) -> tf.Tensor:
    """Resize to ``image_size`` if needed, then rotate by up to ``degrees``, zoom by up to ``zoom`` (a
    fraction) and shift by up to ``shift`` (a fraction of the side), uniformly; borders reflected."""
    if image.shape[0] != image_size or image.shape[1] != image_size:
        image = tf.image.resize(image, [image_size, image_size])
    u = tf.random.stateless_uniform([4], seed=seed, minval=-1.0, maxval=1.0)
    matrix = affine_matrix(u[0] * (degrees * math.pi / 180.0), 1.0 + zoom * u[1],
                           shift * image_size * u[2], shift * image_size * u[3], image_size)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=matrix[None], output_shape=[image_size, image_size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT",
    )[0]


def _recommended(image: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
    """Small rotation, zoom and shift (reflected borders), moderate brightness and contrast; no flips."""
    s = tf.random.experimental.stateless_split(seed, num=4)
    x = _random_affine(image, s[0], image_size, degrees=5.0, zoom=0.10, shift=0.05)
    x = tf.image.stateless_random_brightness(x, max_delta=0.05, seed=s[1])
    return tf.image.stateless_random_contrast(x, lower=0.85, upper=1.15, seed=s[2])


def _strong(image: tf.Tensor, seed: tf.Tensor, image_size: int) -> tf.Tensor:
    """Larger rotation (+-15 deg), zoom (+-20 %) and shift (+-10 %), then a random gamma in [0.7, 1.4]."""
    s = tf.random.experimental.stateless_split(seed, num=4)
    x = _random_affine(image, s[0], image_size, degrees=15.0, zoom=0.20, shift=0.10)
    # gamma = exp(U(log 0.7, log 1.4)): darkens or lightens the mid-greys, keeps black and white
    gamma = tf.exp(tf.random.stateless_uniform([], seed=s[1], minval=math.log(0.7), maxval=math.log(1.4)))
    return tf.pow(tf.clip_by_value(x, 0.0, 1.0), gamma)


POLICIES: dict[str, Policy] = {
    "paper": Policy(
        "paper",
        "the script's: flip, brightness 0.1, contrast x[0.1, 0.2], saturation [0, 5], resize 96 then crop 80",
        _paper,
        input_scale=1.2,
    ),
    "recommended": Policy(
        "recommended",
        "no flips; rotation +-5 deg, zoom +-10 %, shift +-5 %, brightness +-0.05, contrast x[0.85, 1.15]",
        _recommended,
    ),
    "strong": Policy(
        "strong",
        "no flips; rotation +-15 deg, zoom +-20 %, shift +-10 %, gamma [0.7, 1.4]",
        _strong,
    ),
}
"""The augmentation policies by name (``make_dataset(augment=NAME)``)."""


def get_policy(name: str | Policy) -> Policy:
    """Return the policy called ``name`` (or ``name`` itself when it already is a :class:`Policy`)."""
    if isinstance(name, Policy):
        return name
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown augmentation policy {name!r}; choose one of {sorted(POLICIES)} or None") from None


def augment_dataset(ds: tf.data.Dataset, policy: str | Policy, image_size: int, seed: int = 0,
                    rerandomize: bool = True) -> tf.data.Dataset:
    """Augment a dataset of single ``(uint8 image [H, W, C], label)`` pairs; returns float32 images in [0, 1].

    Pixels become [0, 1] through :func:`cxr_utils.preprocess.scale`, as every model input does. Each image
    gets its own seed pair from ``tf.data.Dataset.random(seed)``: drawn anew on every pass with
    ``rerandomize`` (a multi-epoch ``fit`` sees new augmentations each epoch), the same on every pass
    without it (a training run builds one pipeline per epoch, seeded by the epoch). Either way a run
    repeats exactly with the same seed and the same TensorFlow global seed (``train_recipe`` sets both).
    """
    policy = get_policy(policy)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=rerandomize).batch(2, drop_remainder=True)

    def _one(xy, s):
        return policy.apply(scale(xy[0]), s, image_size), xy[1]

    return tf.data.Dataset.zip(ds, seeds).map(_one, num_parallel_calls=tf.data.AUTOTUNE)


def augment_images(images: np.ndarray, policy: str | Policy, image_size: int = 80, seed: int = 0) -> np.ndarray:
    """Augment a ``uint8`` array ``[N, H, W, C]`` (at the policy's input size) as the training pipeline would.

    Returns float32 ``[N, image_size, image_size, C]`` in [0, 1]. The same ``seed`` gives the same result
    under the same TensorFlow global seed (``keras.utils.set_random_seed``, which ``train_recipe`` and the
    lessons call first): ``tf.data.Dataset.random`` combines the two.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), np.int32)))
    ds = augment_dataset(ds, policy, image_size, seed).batch(max(1, len(images)))
    return np.concatenate([x.numpy() for x, _ in ds]) if len(images) else np.zeros((0, image_size, image_size,
                                                                                   images.shape[-1]), np.float32)


def keras_layers(name: str = "recommended", seed: int = 0):
    """Return the policy as Keras preprocessing layers, to put inside a model (active in training only).

    Only ``"recommended"`` is offered: the paper's contrast factor below 1 and its resize-and-crop have
    no matching Keras layer. Every layer gets ``value_range=(0, 1)`` where it has one (the default is
    0..255).
    """
    import keras

    if name != "recommended":
        raise ValueError(f"keras_layers() offers only 'recommended', got {name!r}")
    return keras.Sequential(
        [
            keras.layers.RandomRotation(5 / 360, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom(0.10, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomBrightness(0.05, value_range=(0, 1), seed=seed + 3),
            keras.layers.RandomContrast(0.15, value_range=(0, 1), seed=seed + 4),
        ],
        name="recommended_augmentation",
    )
