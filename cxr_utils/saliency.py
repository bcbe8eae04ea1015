"""Where a network looks: Grad-CAM, its randomisation sanity check, and how much of a map falls on the lungs.

- :func:`grad_cam` (Selvaraju et al. 2017): the gradient of a class's score (its logit, before the
  softmax) with respect to the last convolutional maps, averaged over each map to weigh it, gives a
  coarse map of the image regions that raise that score. :func:`last_conv_layer` finds the layer:
  ``block4_conv3`` of the paper's network, the last ReLU of the efficient network.
- :func:`randomized_copy` and :func:`randomization_check` are the sanity check of Adebayo et al. (2018):
  the same maps from the network with its weights re-initialised, from the top layer down (cascading)
  or all at once. A saliency method that explains the *trained* network must give other maps once
  the weights are random; maps that survive randomisation show the image (edges, bright regions),
  not what was learned. :func:`rank_correlation` compares maps by Spearman correlation.
- :func:`lung_mask` is a deliberately crude estimate of where the lung fields of a frontal chest
  X-ray lie (two ellipses at fixed places in the image, no segmentation), and :func:`mass_inside` the
  share of a map's mass inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import pandas as pd


def last_conv_layer(model: keras.Model) -> str:
    """The layer Grad-CAM weighs: ``block4_conv3`` (the paper's last convolution), else the last ReLU of the
    efficient network's last stage, else the last layer with a spatial (4-D) output that is not a pooling."""
    names = [layer.name for layer in model.layers]
    if "block4_conv3" in names:
        return "block4_conv3"
    relus = [n for n in names if n.startswith("stage") and n.endswith("_relu")]
    if relus:
        return relus[-1]
    for layer in reversed(model.layers):
        if len(layer.output.shape) == 4 and not isinstance(layer, keras.layers.InputLayer) and "pool" not in layer.name:
            return layer.name
    raise ValueError(f"model {model.name!r} has no spatial layer to take Grad-CAM from")


def _logit_model(model: keras.Model, layer: str) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A model giving ``(maps of layer, input of the output layer)``, and that output layer's weights."""
    head = model.get_layer("predictions")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.weights)
    return keras.Model(model.inputs, [model.get_layer(layer).output, head.input]), kernel, bias


def grad_cam(model: keras.Model, images: np.ndarray, class_index: int | Sequence[int] | None = None,
             layer: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps of ``images`` (model input, float32 ``[N, H, W, C]``) for a class, ``[N, H, W]`` in [0, 1].

    Args:
        model: a network of the course (its output layer is named ``predictions``).
        images: model input (:func:`cxr_utils.preprocess.model_input`).
        class_index: the class whose logit is explained: one for all images, one per image, or None for
            the class each image is called.
        layer: the layer whose maps are weighed (default :func:`last_conv_layer`).
        batch_size: images per gradient computation.

    Returns:
        One map per image, upsampled (bilinear) to the input size, each divided by its maximum (a map
        whose every value is 0 stays 0).
    """
    import tensorflow as tf

    layer = layer or last_conv_layer(model)
    sub, kernel, bias = _logit_model(model, layer)
    kernel, bias = tf.constant(kernel, tf.float32), tf.constant(bias, tf.float32)
    n = len(images)
    wanted = None if class_index is None else np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
    out = np.zeros(images.shape[:3], dtype=np.float32)
    for start in range(0, n, batch_size):
        x = tf.constant(images[start:start + batch_size], tf.float32)
        with tf.GradientTape() as tape:
            maps, features = sub(x, training=False)
            tape.watch(maps)
            logits = tf.cast(features, tf.float32) @ kernel + bias
            cls = tf.argmax(logits, axis=1) if wanted is None else tf.constant(wanted[start:start + len(x)])
            score = tf.gather(logits, cls, batch_dims=1)
        grads = tf.cast(tape.gradient(score, maps), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(maps, tf.float32), axis=-1, keepdims=True))
        cam = tf.image.resize(cam, images.shape[1:3], method="bilinear")[..., 0].numpy()
        peak = cam.reshape(len(cam), -1).max(axis=1)
        out[start:start + len(x)] = cam / np.where(peak > 0, peak, 1.0)[:, None, None]
    return out


def randomized_copy(model: keras.Model, layers: int | None = None, seed: int = 0) -> keras.Model:
    """A copy of ``model`` with the weights of its top ``layers`` weighted layers re-initialised (None: all).

    The fresh weights come from the layers' own initialisers (a clone of the architecture, built with
    ``seed``); the layers below keep the trained weights. ``layers=1`` randomises only the output layer,
    ``layers=2`` the output layer and the one below it, and so on: the cascade of Adebayo et al.
    """
    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(model)
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    weighted = [layer.name for layer in model.layers if layer.weights]
    chosen = weighted if layers is None else weighted[::-1][:layers]
    for name in chosen:
        copy.get_layer(name).set_weights(fresh.get_layer(name).get_weights())
    return copy


def weighted_layers(model: keras.Model) -> list[str]:
    """The names of the layers with weights, from the output down (the order of the cascade)."""
    return [layer.name for layer in model.layers if layer.weights][::-1]


def rank_correlation(a: np.ndarray, b: np.ndarray, size: int = 16) -> np.ndarray:
    """Spearman's rank correlation of each pair of maps ``a[i]``, ``b[i]`` (``[N, H, W]``), on coarse cells.

    Maps are first averaged into ``size`` x ``size`` cells (their resolution is that of the last
    convolution, upsampled); a map with no variation has correlation NaN.
    """
    from scipy.stats import spearmanr

    def cells(m: np.ndarray) -> np.ndarray:
        n, h, w = m.shape
        hh, ww = h // size * size, w // size * size
        return m[:, :hh, :ww].reshape(n, size, hh // size, size, ww // size).mean(axis=(2, 4)).reshape(n, -1)

    ca, cb = cells(np.asarray(a, np.float64)), cells(np.asarray(b, np.float64))
    out = np.full(len(ca), np.nan)
    for i in range(len(ca)):
        if ca[i].std() > 0 and cb[i].std() > 0:
            out[i] = spearmanr(ca[i], cb[i]).statistic
    return out


def randomization_check(model: keras.Model, images: np.ndarray, steps: Sequence[int | None] = (1, 2, 4, None),
                        seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Adebayo et al.'s check: rank correlation of trained and randomised maps, per randomisation, with intervals.

    Args:
        model: the trained network.
        images: model input ``[N, H, W, C]``.
        steps: how many top weighted layers to re-initialise in the cascade (None: all of them, which
            is also the "all at once" randomisation).
        seed: seed of the fresh weights and of the bootstrap.
        n_boot: bootstrap replicates over images for the 95 % interval of the mean correlation.

    Returns:
        One row per randomisation: ``randomised`` (which layers), ``layers``, ``mean rank correlation`` with
        ``ci_low``/``ci_high``, and ``images``. The maps are explained for the class each image is called by
        the *trained* network, so every map answers the same question.
    """
    from cxr_utils.metrics import bootstrap_weights, percentiles

    called = np.argmax(model.predict(images, verbose=0), axis=1)
    trained = grad_cam(model, images, called)
    names = weighted_layers(model)
    w = bootstrap_weights(np.arange(len(images)), n_boot, seed)
    rows = []
    for k in steps:
        maps = grad_cam(randomized_copy(model, k, seed), images, called)
        rho = rank_correlation(trained, maps)
        ok = np.isfinite(rho)
        if ok.any():
            drawn = w[:, ok].sum(axis=1)  # a replicate may draw none of the few usable images: leave it out
            lo, hi = percentiles(((w[drawn > 0][:, ok] @ rho[ok]) / drawn[drawn > 0])[:, None])
        else:  # no map varies (a network that has learned nothing): nothing to correlate
            lo, hi = np.full(1, np.nan), np.full(1, np.nan)
        what = "all layers (at once)" if k is None else f"top {k}: {', '.join(names[:k])}"
        rows.append({"randomised": what, "layers": len(names) if k is None else k,
                     "mean rank correlation": float(rho[ok].mean()) if ok.any() else np.nan,
                     "ci_low": float(lo[0]), "ci_high": float(hi[0]), "images": int(ok.sum())})
    return pd.DataFrame(rows)


def lung_mask(height: int, width: int | None = None) -> np.ndarray:
    """A crude lung-field estimate for a frontal chest X-ray: two ellipses at fixed places, ``bool`` ``[H, W]``.

    Each ellipse is centred at 30 % (and 70 %) of the width and 47 % of the height, with half-axes of 16 %
    of the width and 30 % of the height: roughly where the lungs of a centred adult PA film lie. It knows
    nothing of the actual image: a rotated, cropped or paediatric film (smaller lungs, more abdomen) puts
    the lungs elsewhere, so read shares computed with it as rough.
    """
    width = width or height
    y, x = np.mgrid[0:height, 0:width]
    y, x = (y + 0.5) / height, (x + 0.5) / width
    mask = np.zeros((height, width), dtype=bool)
    for cx in (0.30, 0.70):
        mask |= ((x - cx) / 0.16) ** 2 + ((y - 0.47) / 0.30) ** 2 <= 1.0
    return mask


def mass_inside(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The share of each map's mass (``[N, H, W]``, non-negative) inside ``mask``; NaN for an all-zero map."""
    maps = np.asarray(maps, np.float64)
    total = maps.sum(axis=(1, 2))
    inside = (maps * mask[None]).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, inside / total, np.nan)
