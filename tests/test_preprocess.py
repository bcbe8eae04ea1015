"""One preprocessing: a file becomes model input the same way for training, evaluation and prediction."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cxr_utils import data, preprocess
from cxr_utils.images import read_image


def test_model_input_is_the_decoded_resized_file_divided_by_255(mirror):
    files = sorted((mirror / "chest_xray" / "test" / "PNEUMONIA").glob("*.jpeg"))[:3]
    got = preprocess.model_input(files, 24, 1)
    expected = np.stack([read_image(f, channels=1, size=(24, 24)) for f in files])[..., None] / np.float32(255)
    assert got.dtype == np.float32 and got.shape == (3, 24, 24, 1)
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0.0 and got.max() <= 1.0


def test_numpy_and_tensorflow_scaling_agree_bit_for_bit():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    np.testing.assert_array_equal(preprocess.scale(pixels), preprocess.scale(tf.constant(pixels)).numpy())


def test_the_training_pipeline_feeds_the_network_what_model_input_gives_for_the_same_file(curated_data_dir):
    manifest = data.load_manifest()
    val = manifest[manifest["split"] == "val"]
    x, _ = next(iter(data.make_dataset("val", image_size=48, batch_size=5, manifest=manifest)))
    direct = preprocess.model_input([curated_data_dir / p for p in val["path"].iloc[:5]], 48, 3)
    np.testing.assert_array_equal(x.numpy(), direct)


def test_an_augmented_pipeline_scales_as_model_input_does_when_the_policy_changes_nothing(curated_data_dir):
    """With every random change at its identity (a policy that returns its input), augmentation keeps the scaling."""
    from cxr_utils import augment

    identity = augment.Policy("identity", "changes nothing", lambda image, seed, size: image)
    manifest = data.load_manifest()
    x, _ = data.load_split("val", 32, 3, manifest, subset=6)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int32)))
    out = np.stack([img.numpy() for img, _ in augment.augment_dataset(ds, identity, 32)])
    np.testing.assert_array_equal(out, preprocess.scale(x))
