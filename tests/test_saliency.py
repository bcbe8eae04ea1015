"""cxr_utils.saliency: Grad-CAM of a real trained run, the randomisation check, the crude lung fields."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cxr_utils import data, models, preprocess, runs, saliency


@pytest.fixture(scope="module")
def trained(tiny_run):
    model = runs.load_model(tiny_run)
    size, channels = runs.preprocessing(tiny_run)
    x, y = data.load_split("test", size, channels, subset=12, seed=0)
    return model, preprocess.scale(x), y


def test_grad_cam_gives_one_map_per_image_at_the_input_size_scaled_to_one(trained):
    model, x, _ = trained
    maps = saliency.grad_cam(model, x)
    assert maps.shape == x.shape[:3] and maps.dtype == np.float32
    assert maps.min() >= 0 and np.all(np.isclose(maps.reshape(len(maps), -1).max(axis=1), 1.0) |
                                      (maps.reshape(len(maps), -1).max(axis=1) == 0))


def test_grad_cam_explains_the_class_asked_for(trained):
    model, x, _ = trained
    by_class = [saliency.grad_cam(model, x, k) for k in range(3)]
    assert not np.allclose(by_class[0], by_class[2])  # another class's evidence lies elsewhere
    called = model.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_allclose(saliency.grad_cam(model, x), saliency.grad_cam(model, x, called), atol=1e-6)


def test_the_layer_is_the_last_convolution_of_either_network():
    assert saliency.last_conv_layer(models.paper_dcnn(32)) == "block4_conv3"
    assert saliency.last_conv_layer(models.efficient_cnn(32, width=0.25)) == "stage5_2_relu"


def test_a_cascade_re_initialises_only_the_top_layers(trained):
    model, _, _ = trained
    top = saliency.weighted_layers(model)
    copy = saliency.randomized_copy(model, 2, seed=1)
    for name in top:
        same = all(np.array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
                   for a, b in zip(model.get_layer(name).weights, copy.get_layer(name).weights, strict=True))
        assert same == (name not in top[:2]), name


def test_rank_correlation_is_one_for_the_same_map_and_minus_one_for_its_reverse():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 64, 64))
    np.testing.assert_allclose(saliency.rank_correlation(maps, maps), 1.0)
    np.testing.assert_allclose(saliency.rank_correlation(maps, -maps), -1.0)
    assert np.isnan(saliency.rank_correlation(np.ones((1, 64, 64)), maps[:1]))[0]


def test_the_randomisation_check_reports_every_step_with_an_interval(trained):
    model, x, _ = trained
    table = saliency.randomization_check(model, x, steps=(1, None), n_boot=50)
    assert table["layers"].tolist() == [1, len(saliency.weighted_layers(model))]
    finite = table.dropna()
    assert ((finite["ci_low"] <= finite["mean rank correlation"]) &
            (finite["mean rank correlation"] <= finite["ci_high"])).all()


def test_the_lung_fields_are_two_symmetric_ellipses_and_a_flat_map_puts_their_area_on_them():
    mask = saliency.lung_mask(128)
    assert mask.shape == (128, 128) and np.array_equal(mask, mask[:, ::-1])
    assert 0.25 < mask.mean() < 0.35 and not mask[:, 60:68].any()  # the mediastinum is outside
    flat = np.ones((2, 128, 128))
    np.testing.assert_allclose(saliency.mass_inside(flat, mask), mask.mean())
    assert np.isnan(saliency.mass_inside(np.zeros((1, 128, 128)), mask))[0]
