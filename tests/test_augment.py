"""cxr_utils.augment: every policy keeps shape, dtype and range, repeats with its seed, and does
what its description says (the paper's contrast cut, its 96 -> 80 crop, the geometry of ours).

Images are real X-rays read from the mirror (three Kaggle images, one Cohen COVID-19 image).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cxr_utils import augment
from cxr_utils.images import read_image

FILES = (
    "chest_xray/train/NORMAL/IM-0115-0001.jpeg",
    "chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg",
    "chest_xray/test/NORMAL/IM-0001-0001.jpeg",
    "covid-chestxray-dataset/images/1-s2.0-S0140673620303706-fx1_lrg.jpg",
)


@pytest.fixture(autouse=True)
def global_seed():
    """Set TensorFlow's global seed, as lesson 02 and ``train_recipe`` do before they augment: a policy's
    random draws depend on it as well as on the ``seed`` argument, so without this the results here would
    depend on which tests ran before (``tests/test_train.py`` sets other global seeds)."""
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def read_real(mirror):
    """``read_real(size, channels=3)``: the FILES above as uint8 ``[4, size, size, channels]``."""
    return lambda size, channels=3: _read(mirror, size, channels)


def _read(mirror, size: int, channels: int) -> np.ndarray:
    files = [mirror / f for f in FILES]
    imgs = [read_image(f, channels=channels, size=(size, size)) for f in files]
    return np.stack([i[..., None] if channels == 1 else i for i in imgs])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(augment.POLICIES))
def test_every_policy_keeps_shape_dtype_and_unit_value_range(name, channels, read_real):
    policy = augment.POLICIES[name]
    x = read_real(policy.input_size(64), channels)
    out = augment.augment_images(x, name, image_size=64, seed=0)
    assert out.shape == (len(x), 64, 64, channels)
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, tf.image.resize(x / 255.0, [64, 64]).numpy(), atol=1e-3)  # it did change them


@pytest.mark.parametrize("name", sorted(augment.POLICIES))
def test_the_same_seed_repeats_an_augmentation_and_another_seed_does_not(name, read_real):
    x = read_real(augment.POLICIES[name].input_size(64))
    a = augment.augment_images(x, name, 64, seed=3)
    b = augment.augment_images(x, name, 64, seed=3)
    c = augment.augment_images(x, name, 64, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_paper_policy_reads_96_pixels_to_return_80_and_ours_reads_80():
    assert augment.POLICIES["paper"].input_size(80) == 96
    assert augment.POLICIES["recommended"].input_size(80) == 80


def test_the_paper_contrast_cuts_every_image_to_a_fifth_of_its_contrast_or_less(read_real):
    # Read as one channel: on a colour image the script's saturation factor (up to 5) would widen the
    # spread again (the Cohen image here is colour), which is not what this test is about.
    x = read_real(96, channels=1)
    out = augment.augment_images(x, "paper", 80, seed=0)
    # Compare with the same images resized to 80 (no augmentation): the test-time view.
    ratio = out.std(axis=(1, 2, 3)) / (tf.image.resize(x / 255.0, [80, 80]).numpy().std(axis=(1, 2, 3)))
    assert np.all(ratio < 0.25), ratio  # factor 0.1-0.2, a little slack for the crop
    assert np.all(ratio > 0.05), ratio


def test_the_paper_saturation_leaves_grey_images_grey(read_real):
    x = read_real(96, channels=3)[:3]  # the Kaggle images (the COVID-19 one is stored in colour)
    assert np.array_equal(x[..., 0], x[..., 1])  # the mirror stores grey pictures as L: R = G = B
    out = augment.augment_images(x, "paper", 80, seed=1)
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)


def _transform(img: np.ndarray, angle=0.0, zoom=1.0, sx=0.0, sy=0.0) -> np.ndarray:
    size = img.shape[0]
    m = augment.affine_matrix(tf.constant(angle), tf.constant(zoom), tf.constant(sx), tf.constant(sy), size)
    out = tf.raw_ops.ImageProjectiveTransformV3(images=img[None], transforms=m[None], output_shape=[size, size],
                                                fill_value=0.0, interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0].numpy()


def test_the_affine_matrix_is_the_identity_without_rotation_zoom_or_shift(read_real):
    img = read_real(40)[0].astype(np.float32)
    np.testing.assert_array_equal(_transform(img), img)


def test_the_affine_matrix_shifts_by_whole_pixels_and_rotates_a_quarter_turn(read_real):
    img = read_real(40)[0].astype(np.float32)
    shifted = _transform(img, sx=3.0, sy=-2.0)
    np.testing.assert_array_equal(shifted[:38, 3:], img[2:, :37])  # content moves right 3, up 2
    turned = _transform(img, angle=math.pi / 2)
    assert np.allclose(turned, np.rot90(img, k=1), atol=0) or np.allclose(turned, np.rot90(img, k=-1), atol=0)


def test_the_recommended_policy_keeps_the_picture_close_to_the_original(read_real):
    x = read_real(80)
    out = augment.augment_images(x, "recommended", 80, seed=0)
    ref = x / 255.0
    corr = [np.corrcoef(o.ravel(), r.ravel())[0, 1] for o, r in zip(out, ref, strict=True)]
    assert min(corr) > 0.5 and np.mean(corr) > 0.7, corr  # a small rotation, zoom and shift: same picture
    paper = augment.augment_images(read_real(96), "paper", 80, seed=0)
    assert np.abs(out - ref).mean() < np.abs(paper - ref).mean()


def test_the_strong_policy_moves_more_than_the_recommended_and_keeps_black_and_white(read_real):
    x = read_real(80)
    ref = x / 255.0
    strong = augment.augment_images(x, "strong", 80, seed=0)
    mild = augment.augment_images(x, "recommended", 80, seed=0)
    assert np.abs(strong - ref).mean() > np.abs(mild - ref).mean()
    # on a flat grey image the geometry changes nothing and the gamma maps 0.5 to 0.5 ** gamma, gamma in [0.7, 1.4]
    grey = np.full((16, 80, 80, 1), 128, np.uint8)
    values = augment.augment_images(grey, "strong", 80, seed=0)[:, 40, 40, 0]
    x = 128 / 255
    assert np.all(values >= x**1.4 - 1e-4) and np.all(values <= x**0.7 + 1e-4), values
    assert values.std() > 0.02  # a different gamma for each image


def test_an_unknown_policy_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"'heavy'.*\['paper', 'recommended', 'strong'\]"):
        augment.get_policy("heavy")


def test_the_keras_layers_version_works_on_unit_range_images(read_real):
    x = (read_real(64) / 255.0).astype(np.float32)
    layers = augment.keras_layers("recommended", seed=0)
    out = np.asarray(layers(x, training=True))
    assert out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - x).mean() < 0.1  # value_range=(0, 1): changes are small, not 255 times too large
    assert not np.allclose(out, x)
    np.testing.assert_array_equal(np.asarray(layers(x, training=False)), x)  # inference leaves images alone
