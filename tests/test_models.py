"""The networks: the paper's exactly as its script built it, our efficient one, and the arithmetic
(parameters, multiply-adds, receptive fields) the architecture lesson shows about them."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from cxr_utils import CLASSES, models
from cxr_utils.images import read_image


@pytest.fixture(scope="module")
def paper():
    keras.utils.set_random_seed(0)
    return models.paper_dcnn()


@pytest.fixture(scope="module")
def efficient():
    keras.utils.set_random_seed(0)
    return models.efficient_cnn()


def paper_param_formula(size: int, channels: int, width: float) -> int:
    """The paper network's parameter count, written out layer by layer from NOTES.md."""
    convs = [(n, max(1, round(f * width))) for n, f in ((2, 32), (2, 64), (3, 128), (3, 128))]
    total, c_in = 0, channels
    for n, f in convs:
        for _ in range(n):
            total += 3 * 3 * c_in * f + f
            c_in = f
    side = size
    for _ in range(3):
        side //= 2  # the last conv layer sits after three 2x2 poolings
    features = sum(f for _, f in convs) + side * side * c_in
    return total + (features * 4096 + 4096) + (4096 * 2048 + 2048) + (2048 * 3 + 3)


def test_paper_dcnn_has_the_papers_63148835_parameters(paper):
    assert paper.count_params() == 63_148_835 == models.PAPER_PARAMS


def test_paper_dcnn_layers_are_laid_out_as_the_script_built_them(paper):
    layout = [(layer.name, type(layer).__name__, tuple(layer.output.shape[1:])) for layer in paper.layers]
    convs = [(name, shape) for name, kind, shape in layout if kind == "Conv2D"]
    assert convs == [
        ("block1_conv1", (80, 80, 32)), ("block1_conv2", (80, 80, 32)),
        ("block2_conv1", (40, 40, 64)), ("block2_conv2", (40, 40, 64)),
        ("block3_conv1", (20, 20, 128)), ("block3_conv2", (20, 20, 128)), ("block3_conv3", (20, 20, 128)),
        ("block4_conv1", (10, 10, 128)), ("block4_conv2", (10, 10, 128)), ("block4_conv3", (10, 10, 128)),
    ]  # fmt: skip
    for name, _ in convs:
        layer = paper.get_layer(name)
        assert layer.kernel_size == (3, 3) and layer.padding == "same"
        assert layer.activation is keras.activations.elu
    pools = [(name, shape) for name, kind, shape in layout if kind == "MaxPooling2D"]
    assert pools == [
        ("block1_pool", (40, 40, 32)), ("block2_pool", (20, 20, 64)),
        ("block3_pool", (10, 10, 128)), ("block4_pool", (5, 5, 128)),
    ]  # fmt: skip
    head = layout[-8:]
    assert head == [
        ("gmp_concat", "Concatenate", (352,)),
        ("last_conv_flatten", "Flatten", (12800,)),
        ("features", "Concatenate", (13152,)),
        ("dense1", "Dense", (4096,)),
        ("dropout1", "Dropout", (4096,)),
        ("dense2", "Dense", (2048,)),
        ("dropout2", "Dropout", (2048,)),
        ("predictions", "Dense", (3,)),
    ]
    assert paper.get_layer("dropout1").rate == 0.5
    assert paper.get_layer("dropout2").rate == 0.4
    assert paper.get_layer("dense1").activation is keras.activations.elu
    assert paper.get_layer("dense2").activation is keras.activations.elu
    assert paper.get_layer("predictions").activation is keras.activations.softmax
    # The flattened branch is the last conv layer *before* block 4's pooling.
    assert paper.get_layer("last_conv_flatten").input is paper.get_layer("block4_conv3").output


def test_paper_pooling_branches_are_global_max_pooling_of_each_pooled_block(paper):
    for b in range(1, 5):
        branch = paper.get_layer(f"block{b}_gmp")
        assert isinstance(branch, keras.layers.GlobalMaxPooling2D)
        assert branch.input is paper.get_layer(f"block{b}_pool").output
    assert not any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in paper.layers)


@pytest.mark.parametrize(
    ("size", "channels", "width"),
    [(80, 1, 1.0), (128, 3, 1.0), (96, 3, 0.5), (80, 3, 2.0)],
)
def test_paper_parameter_count_follows_input_size_channels_and_width(size, channels, width):
    model = models.paper_dcnn(size=size, channels=channels, width=width)
    assert model.input.shape[1:] == (size, size, channels)
    assert model.count_params() == paper_param_formula(size, channels, width)


def test_paper_parameter_count_grows_by_the_flattened_map_times_4096_at_128_px():
    # 16x16x128 = 32,768 flattened values instead of 12,800: 19,968 more inputs to dense1.
    assert models.paper_dcnn(size=128).count_params() == 63_148_835 + 19_968 * 4096 == 144_937_763


def test_efficient_cnn_has_at_most_two_percent_of_the_papers_parameters(efficient):
    assert efficient.count_params() <= 0.02 * models.PAPER_PARAMS
    assert not any(
        isinstance(layer, keras.layers.Dense) and layer.count_params() > 100_000 for layer in efficient.layers
    )
    assert isinstance(efficient.get_layer("gap"), keras.layers.GlobalAveragePooling2D)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in efficient.layers)


def test_efficient_cnn_needs_fewer_multiply_adds_than_the_paper(paper, efficient):
    assert models.multiply_adds(efficient) < 0.5 * models.multiply_adds(paper)


def test_efficient_cnn_takes_grey_input_at_other_sizes_and_width():
    model = models.efficient_cnn(size=128, channels=1, width=0.5)
    assert model.input.shape[1:] == (128, 128, 1)
    assert model.output.shape[1:] == (len(CLASSES),)
    assert model.get_layer("stage1_1_conv").filters == 16


def test_builders_reject_unsupported_channels_naming_the_value():
    with pytest.raises(ValueError, match="channels must be 1 .* got 4"):
        models.paper_dcnn(channels=4)
    with pytest.raises(ValueError, match="got 'pool'"):
        models.efficient_cnn(stages=(("conv", 8, 1), ("pool", 8, 1)))


@pytest.fixture(scope="module")
def real_xrays(mirror) -> np.ndarray:
    """Two real Normal test X-rays from the mirror, as the paper fed them: RGB, 80x80, in [0, 1]."""
    files = sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[:2]
    assert len(files) == 2, f"expected X-rays under {mirror}/chest_xray/test/NORMAL"
    return np.stack([read_image(f, channels=3, size=(80, 80)) for f in files]).astype("float32") / 255.0


@pytest.mark.parametrize("builder", [models.paper_dcnn, models.efficient_cnn], ids=["paper", "efficient"])
def test_models_give_class_probabilities_summing_to_one_on_real_xrays(builder, real_xrays):
    keras.utils.set_random_seed(0)
    probs = np.asarray(builder()(real_xrays, training=False))
    assert probs.shape == (2, len(CLASSES))
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_per_image_standardization_gives_each_real_xray_mean_0_and_std_1(real_xrays):
    out = np.asarray(models.PerImageStandardization()(real_xrays))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1.0, rtol=1e-4)


def test_standardized_efficient_cnn_ignores_brightness_and_contrast(real_xrays):
    """The same X-ray at 20 % contrast and shifted brightness (no clipping) gives the same features."""
    dimmed = 0.2 * (real_xrays - 0.5) + 0.55  # the paper's contrast cut plus a brightness shift, still in [0, 1]
    for standardize in (True, False):
        keras.utils.set_random_seed(0)
        model = models.efficient_cnn(standardize=standardize)
        features = keras.Model(model.input, model.get_layer("gap").output)
        a, b = np.asarray(features(dimmed, training=False)), np.asarray(features(real_xrays, training=False))
        change = np.abs(a - b).max() / np.abs(b).max()
        assert (change < 1e-3) if standardize else (change > 0.1), (standardize, change)


def test_stem_stride_2_halves_every_map_and_keeps_the_parameter_count():
    one, two = models.efficient_cnn(160), models.efficient_cnn(160, stem_stride=2)
    assert one.count_params() == two.count_params()
    assert one.get_layer("stage1_1_conv").output.shape[1:3] == (160, 160)
    assert two.get_layer("stage1_1_conv").output.shape[1:3] == (80, 80)
    assert models.multiply_adds(two) < 0.3 * models.multiply_adds(one)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2, got 4"):
        models.efficient_cnn(stem_stride=4)


def test_group_norm_treats_each_image_alone_in_training_as_at_test(real_xrays):
    """With norm="group" an image's output does not depend on the batch it is in, in training mode too."""
    keras.utils.set_random_seed(0)
    model = models.efficient_cnn(norm="group", dropout=0.0)
    assert not any(isinstance(lay, keras.layers.BatchNormalization) for lay in model.layers)
    alone = np.asarray(model(real_xrays[:1], training=True))
    together = np.asarray(model(real_xrays, training=True))[:1]
    np.testing.assert_allclose(alone, together, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model(real_xrays[:1], training=False)), alone, atol=1e-5)
    keras.utils.set_random_seed(0)
    batch = models.efficient_cnn(dropout=0.0)  # batch norm: training mode uses the batch's statistics
    assert not np.allclose(batch(real_xrays[:1], training=True), batch(real_xrays, training=True)[:1], atol=1e-5)
    with pytest.raises(ValueError, match="norm must be 'batch' or 'group', got 'layer'"):
        models.efficient_cnn(norm="layer")


def test_recalibrate_batchnorm_sets_running_statistics_to_those_of_the_images(real_xrays):
    keras.utils.set_random_seed(0)
    model = models.efficient_cnn(width=0.25)
    before = [w.copy() for w in model.get_weights()]
    again = models.recalibrate_batchnorm(model, real_xrays, batch_size=1)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # the original model is untouched
    first = again.get_layer("stage1_1_bn")
    acts = np.asarray(keras.Model(again.input, first.input)(real_xrays))
    np.testing.assert_allclose(first.moving_mean, acts.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(first.moving_variance, acts.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-7)
    assert not np.allclose(model.get_layer("stage1_1_bn").moving_variance, first.moving_variance)


def test_bn_momentum_reaches_every_batch_norm_layer():
    model = models.efficient_cnn(width=0.25, bn_momentum=0.9)
    bns = [lay for lay in model.layers if isinstance(lay, keras.layers.BatchNormalization)]
    assert len(bns) == 8 and all(lay.momentum == 0.9 for lay in bns)
    assert all(lay.momentum == 0.99 for lay in models.efficient_cnn(width=0.25).layers
               if isinstance(lay, keras.layers.BatchNormalization))


def test_standardized_model_survives_save_and_load(tmp_path, real_xrays):
    keras.utils.set_random_seed(0)
    model = models.efficient_cnn(standardize=True, width=0.25)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert isinstance(again.get_layer("standardize"), models.PerImageStandardization)
    np.testing.assert_allclose(again(real_xrays, training=False), model(real_xrays, training=False), atol=1e-6)


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    """8x8x2 -> conv 3x3 (4) -> pool 2 -> separable 3x3 (6) -> conv 3x3 stride 2 (2) -> dense (5)."""
    inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="strided")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="dense")(x))


def test_multiply_adds_match_a_hand_count_on_a_tiny_model(tiny):
    by_layer = {layer.name: models.layer_multiply_adds(layer) for layer in tiny.layers}
    assert by_layer["conv"] == 8 * 8 * 9 * 2 * 4  # 4608
    assert by_layer["sep"] == 4 * 4 * 9 * 4 + 4 * 4 * 4 * 6  # depthwise 576 + pointwise 384
    assert by_layer["strided"] == 2 * 2 * 9 * 6 * 2  # 432
    assert by_layer["dense"] == 8 * 5
    assert by_layer["pool"] == by_layer["bn"] == by_layer["flat"] == 0
    assert models.multiply_adds(tiny) == 4608 + 960 + 432 + 40


def test_receptive_fields_match_a_hand_count_on_a_tiny_model(tiny):
    fields = models.receptive_fields(tiny)
    assert fields["conv"] == (3, 1)
    assert fields["pool"] == (4, 2)
    assert fields["sep"] == (8, 2)  # 4 + (3 - 1) * 2
    assert fields["bn"] == (8, 2)
    assert fields["strided"] == (12, 4)  # 8 + (3 - 1) * 2, jump 2 * 2
    assert "flat" not in fields and "dense" not in fields


def test_paper_receptive_field_grows_to_100_pixels_after_block_4(paper):
    fields = models.receptive_fields(paper)
    assert [fields[f"block{b}_pool"][0] for b in range(1, 5)] == [6, 16, 44, 100]


def test_summary_table_shares_add_up_and_dense1_holds_85_percent(paper):
    table = models.model_summary_table(paper)
    assert table["params"].sum() == paper.count_params()
    assert table["share"].sum() == pytest.approx(1.0)
    dense1 = table.set_index("layer").loc["dense1"]
    assert dense1["params"] == 13152 * 4096 + 4096
    assert 0.85 < dense1["share"] < 0.86
    assert table["MACs"].sum() == models.multiply_adds(paper)


def test_block_table_groups_layers_by_block(paper):
    table = models.block_table(paper, prefixes=["block1", "block2", "block3", "block4"]).set_index("block")
    assert list(table.index) == ["block1", "block2", "block3", "block4", "head"]
    assert table.loc["block1", "params"] == 896 + 9248
    assert table.loc["block4", "output shape"] == "5x5x128"
    assert table["params"].sum() == paper.count_params()


def test_training_throughput_reports_images_per_second_of_a_real_training_step(tiny):
    model = keras.models.clone_model(tiny)
    before = [w.copy() for w in model.get_weights()]
    speed = models.training_throughput(model, batch_size=4, steps=2, warmup=1)
    assert speed > 0
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def _train_and_count_traces(build_first: bool, x: np.ndarray) -> tuple[int, list[np.ndarray]]:
    """Train a fresh small conv net (seed 0) for one epoch on ``x``; return how many times Keras traced its
    training step, and its weights after."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(CLASSES), activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    if build_first:
        assert models.build_training_state(model) is model
    traces = []
    step = model.train_step
    model.train_step = lambda data: (traces.append(1), step(data))[1]  # runs once per trace, not per batch
    y = keras.utils.to_categorical(np.arange(len(x)) % len(CLASSES), len(CLASSES))
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0)
    return len(traces), model.get_weights()


def test_building_the_training_state_first_traces_the_step_once_and_trains_the_same(real_xrays):
    x = np.concatenate([real_xrays, real_xrays[:, ::-1]])  # four real X-rays: two batches of two
    once, built = _train_and_count_traces(True, x)
    twice, lazy = _train_and_count_traces(False, x)
    assert once == 1
    assert twice == 2, ("this Keras no longer traces a step that creates the optimizer's variables twice: "
                        "models.build_training_state no longer saves anything and can go")
    for a, b in zip(built, lazy, strict=True):
        np.testing.assert_array_equal(a, b)


def test_building_the_training_state_needs_a_compiled_model():
    with pytest.raises(ValueError, match="compile"):
        models.build_training_state(models.efficient_cnn(size=32, width=0.25))
