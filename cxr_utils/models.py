"""The networks of the course, and the arithmetic that describes them.

Two builders, both returning an *uncompiled* ``keras.Model`` whose input is
``keras.Input((size, size, channels))`` and whose output is a softmax over the three classes of
:data:`cxr_utils.CLASSES`:

- :func:`paper_dcnn` is Zhong's (2020) network exactly as the author's training script built it:
  63,148,835 parameters at 80x80x3. Four VGG-style conv blocks with ELU, a global **max** pooling
  branch after each block (the paper's text says average pooling; its code uses max), the
  flattened last conv layer, and a 4096-2048 dense head that holds 99 % of the parameters.
- :func:`efficient_cnn` is the course's own small network (about 1 % of the paper's parameters):
  conv, batch normalisation and ReLU; depthwise-separable convs at the low resolutions; a global
  average pooling head instead of the 54 M-parameter dense layer.

And the numbers a lesson shows about any such model:

- :func:`model_summary_table`: one row per layer (output shape, parameters, share of the total,
  multiply-adds per image, receptive field);
- :func:`multiply_adds`: multiply-accumulate operations for one image's forward pass;
- :func:`receptive_fields`: receptive field and stride ("jump") of every spatial layer;
- :func:`training_throughput`: images per second of a training step on random in-memory arrays.

And :func:`build_training_state`, which readies a compiled model for ``fit`` so that TensorFlow traces its
training step once, not twice.

The builders take no seed: call ``keras.utils.set_random_seed(seed)`` before building for
reproducible initial weights.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np
import pandas as pd

from cxr_utils import CLASSES

PAPER_PARAMS = 63_148_835
"""Parameter count of the paper's network at 80x80x3 (paper, section 3.3; and its script)."""

PAPER_BLOCKS: tuple[tuple[int, int], ...] = ((2, 32), (2, 64), (3, 128), (3, 128))
"""The paper's conv blocks as ``(number of 3x3 conv layers, filters)``."""


def _filters(base: int, width: float) -> int:
    """Scale a filter count by the width multiplier (at least one filter)."""
    return max(1, int(round(base * width)))


def _check_input(size: int, channels: int, min_size: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB as the paper), got {channels!r}")
    if size < min_size:
        raise ValueError(f"size must be at least {min_size} pixels for this network, got {size!r}")


def paper_dcnn(size: int = 80, channels: int = 3, width: float = 1.0) -> keras.Model:
    """Build Zhong's (2020) network as the author's training script did.

    Args:
        size: side of the square input in pixels (the paper: 80). At least 16, since four 2x2 max
            poolings halve it four times; sizes not divisible by 16 are floored at each pooling.
        channels: 3 (the paper decoded every X-ray as RGB) or 1 (grey).
        width: multiplier on every conv layer's filter count (1.0 is the paper: 32, 64, 128, 128).
            The dense head (4096, 2048) is not scaled.

    Returns:
        An uncompiled ``keras.Model`` named ``paper_dcnn``: input ``(size, size, channels)`` in
        [0, 1], output ``(3,)`` softmax probabilities in the order of ``cxr_utils.CLASSES``.

    Layer names: ``block{b}_conv{i}``, ``block{b}_pool``, ``block{b}_gmp`` (the global max pooling
    branch of block ``b``), ``gmp_concat``, ``last_conv_flatten``, ``features``, ``dense1``,
    ``dropout1``, ``dense2``, ``dropout2``, ``predictions``. At 80x80x3 the model has
    :data:`PAPER_PARAMS` = 63,148,835 parameters.
    """
    _check_input(size, channels, 16)
    inputs = keras.Input((size, size, channels), name="image")
    x = inputs
    branches = []
    last_conv = x
    for b, (n_convs, base) in enumerate(PAPER_BLOCKS, start=1):
        for i in range(1, n_convs + 1):
            x = keras.layers.Conv2D(
                _filters(base, width), 3, padding="same", activation="elu", name=f"block{b}_conv{i}"
            )(x)
        last_conv = x
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        # The paper's text: "add GlobalAveragePooling layer after Maxpooling"; its code: max pooling.
        branches.append(keras.layers.GlobalMaxPooling2D(name=f"block{b}_gmp")(x))
    pooled = keras.layers.Concatenate(name="gmp_concat")(branches)
    # The last conv layer's full map *before* block 4's pooling (10x10x128 at 80 px), flattened.
    flat = keras.layers.Flatten(name="last_conv_flatten")(last_conv)
    x = keras.layers.Concatenate(name="features")([pooled, flat])
    x = keras.layers.Dense(4096, activation="elu", name="dense1")(x)
    x = keras.layers.Dropout(0.5, name="dropout1")(x)
    x = keras.layers.Dense(2048, activation="elu", name="dense2")(x)
    x = keras.layers.Dropout(0.4, name="dropout2")(x)
    # float32 even under mixed precision: softmax and the loss need its range (cxr_utils.precision)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="paper_dcnn")


EFFICIENT_STAGES: tuple[tuple[str, int, int], ...] = (
    ("conv", 32, 1),
    ("conv", 64, 1),
    ("conv", 128, 2),
    ("sep", 256, 2),
    ("sep", 512, 2),
)
"""The efficient network's stages as ``(kind, filters, number of conv blocks)``: one plain 3x3 conv
per stage at the two highest resolutions (80 and 40 px at 80 px input), two at the third, then
pairs of depthwise-separable convs on the wide, small maps. Every stage but the last ends in 2x2
max pooling."""


@keras.saving.register_keras_serializable(package="cxr_utils")
class PerImageStandardization(keras.layers.Layer):
    """Subtract each image's own mean and divide by its own standard deviation (over all pixels and channels).

    The network then sees every X-ray at the same overall brightness and contrast, whatever the
    exposure, the scanner's grey-level mapping or a brightness/contrast augmentation did to it:
    ``x -> (x - mean(x)) / max(std(x), eps)``. It has no weights and acts the same in training and
    at test time. Registered, so a saved model reloads once ``cxr_utils.models`` is imported.
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        mean = keras.ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = keras.ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) / keras.ops.maximum(std, self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


MASKS: tuple[str, ...] = ("hide_lungs", "border_only")
"""What :class:`InputMask` can black out: the lung fields, or everything but an outer border strip."""

BORDER = 0.10
"""The width of the strip ``"border_only"`` keeps, as a share of the image side."""


def input_mask(kind: str, size: int) -> np.ndarray:
    """The 0/1 mask :class:`InputMask` multiplies an image by, ``float32`` ``[size, size, 1]``.

    ``"hide_lungs"``: 0 on the lung fields of :func:`cxr_utils.saliency.lung_mask` grown by a tenth of the
    image (so their edges go too), 1 elsewhere: the mediastinum, shoulders, abdomen, borders and any
    text stay. ``"border_only"``: 1 on an outer strip :data:`BORDER` of the side wide, 0 inside it.
    """
    y, x = np.mgrid[0:size, 0:size]
    y, x = (y + 0.5) / size, (x + 0.5) / size
    if kind == "hide_lungs":
        lungs = np.zeros((size, size), dtype=bool)
        for cx in (0.30, 0.70):  # the ellipses of saliency.lung_mask, half-axes grown by 0.05 of the side
            lungs |= ((x - cx) / 0.21) ** 2 + ((y - 0.47) / 0.35) ** 2 <= 1.0
        keep = ~lungs
    elif kind == "border_only":
        keep = (x < BORDER) | (x > 1 - BORDER) | (y < BORDER) | (y > 1 - BORDER)
    else:
        raise ValueError(f"input_mask must be one of {list(MASKS)}, got {kind!r}")
    return keep.astype(np.float32)[..., None]


@keras.saving.register_keras_serializable(package="cxr_utils")
class InputMask(keras.layers.Layer):
    """Black out part of every image, in training and at test alike (lesson 08's shortcut experiments).

    ``kind`` is one of :data:`MASKS` (:func:`input_mask` draws it at the input's size). With the lung
    fields hidden, a network that still tells the classes apart reads them from somewhere else.
    """

    def __init__(self, kind: str, **kwargs):
        super().__init__(**kwargs)
        if kind not in MASKS:
            raise ValueError(f"input_mask must be one of {list(MASKS)}, got {kind!r}")
        self.kind = kind

    def build(self, input_shape):
        self.mask = keras.ops.convert_to_tensor(input_mask(self.kind, int(input_shape[1])))

    def call(self, inputs):
        return inputs * keras.ops.cast(self.mask, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


GROUPS = 8
"""Channel groups of ``efficient_cnn(norm="group")`` (fewer where a layer's filter count is not a multiple)."""


def _conv_bn_relu(x, filters: int, kind: str, name: str, strides: int = 1, bn_momentum: float = 0.99,
                  norm: str = "batch"):
    """3x3 conv (plain or depthwise-separable) without bias, then batch (or group) norm, then ReLU."""
    if kind == "conv":
        x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = keras.layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                                         name=f"{name}_sepconv")(x)
    if norm == "batch":
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    else:  # statistics of each image's own channel groups: the same in training and at test, no running averages
        x = keras.layers.GroupNormalization(math.gcd(filters, GROUPS), name=f"{name}_gn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def efficient_cnn(
    size: int = 80,
    channels: int = 3,
    width: float = 1.0,
    dropout: float = 0.3,
    stages: tuple[tuple[str, int, int], ...] = EFFICIENT_STAGES,
    standardize: bool = False,
    stem_stride: int = 1,
    bn_momentum: float = 0.99,
    norm: str = "batch",
    input_mask: str | None = None,
    n_classes: int = len(CLASSES),
) -> keras.Model:
    """Build the course's small, CPU-friendly network (the backbone of the ``improved`` recipe).

    Design (:data:`EFFICIENT_STAGES`): five stages of 3x3 conv -> batch norm -> ReLU blocks, each
    stage but the last followed by 2x2 max pooling (80 -> 40 -> 20 -> 10 -> 5 px). Where maps are
    large and channels few (32, 64, 128 filters) the convs are plain: most of the arithmetic is
    there, and plain convs are what a CPU runs fastest per multiply-add. Where channels are many
    and maps small (256, 512 filters) the convs are depthwise-separable (a 3x3 filter per channel,
    then a 1x1 mix), which need about ``1/9 + 1/C`` of a plain conv's parameters: 512 filters
    fit in well under 1 M parameters. The head is global average pooling, dropout and one dense
    softmax layer: no 54 M-parameter dense layer. Conv layers have no bias (batch norm's shift
    replaces it). About 0.75 M parameters and 144 M multiply-adds per 80x80 image, against the
    paper's 63.1 M and 407 M.

    Batch normalisation normalises each channel with the batch's statistics during training and
    with running averages of them at test time. Training augmentation that changes the input
    distribution (the paper's contrast factor 0.1-0.2 cuts contrast to 10-20 %) makes those
    running statistics describe low-contrast images that test never shows: use mild augmentation
    with this network.

    Args:
        size: side of the square input in pixels (at least 16).
        channels: 1 (grey) or 3 (RGB).
        width: multiplier on every stage's filter count.
        dropout: dropout rate before the classifier.
        stages: ``(kind, filters, number of conv blocks)`` per stage, kind ``"conv"`` or ``"sep"``
            (default :data:`EFFICIENT_STAGES`).
        standardize: begin with :class:`PerImageStandardization` (each image to mean 0, std 1), so
            the network ignores global brightness and contrast.
        stem_stride: stride of the very first conv (2 halves every map: a 160 px input then costs
            about what an 80 px one costs with stride 1, but the first filters see the finer pixels).
        bn_momentum: batch norm's running-average momentum (Keras' default 0.99 averages over about
            100 steps; 0.9 over about 10, so the test-time statistics keep up in short runs).
        norm: ``"batch"`` (batch normalisation: batch statistics in training, running averages at
            test) or ``"group"`` (group normalisation, :data:`GROUPS` channel groups: each image's own
            statistics, computed the same way in training and at test, so nothing learned from the
            training images' statistics can be out of step with a test image).
        input_mask: begin with an :class:`InputMask` (``"hide_lungs"``, ``"border_only"``): the network
            never sees that part of any image.
        n_classes: outputs of the softmax (3, the classes; lesson 08 also tells the 4 sources apart).

    Returns:
        An uncompiled ``keras.Model`` named ``efficient_cnn``: input ``(size, size, channels)`` in
        [0, 1], output ``(3,)`` softmax probabilities in the order of ``cxr_utils.CLASSES``. Layer
        names: ``stage{s}_{i}_conv|sepconv``, ``_bn``, ``_relu``, ``stage{s}_pool``, ``gap``,
        ``dropout``, ``predictions``.
    """
    _check_input(size, channels, 16)
    inputs = keras.Input((size, size, channels), name="image")
    if norm not in ("batch", "group"):
        raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    x = InputMask(input_mask, name="input_mask")(inputs) if input_mask else inputs
    x = PerImageStandardization(name="standardize")(x) if standardize else x
    for s, (kind, base, n_convs) in enumerate(stages, start=1):
        if kind not in ("conv", "sep"):
            raise ValueError(f"stage kind must be 'conv' or 'sep', got {kind!r} in stage {s}")
        for i in range(1, n_convs + 1):
            stride = stem_stride if (s, i) == (1, 1) else 1
            x = _conv_bn_relu(x, _filters(base, width), kind, name=f"stage{s}_{i}", strides=stride,
                              bn_momentum=bn_momentum, norm=norm)
        if s < len(stages):
            x = keras.layers.MaxPooling2D(2, name=f"stage{s}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 even under mixed precision: softmax and the loss need its range (cxr_utils.precision)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="efficient_cnn")


# ---------------------------------------------------------------------------------------------
# Arithmetic about a model: multiply-adds, receptive fields, a layer table
# ---------------------------------------------------------------------------------------------


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


def _input_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers whose outputs feed ``layer`` (in a functional model where each layer is used once)."""
    inputs = layer.input if isinstance(layer.input, list | tuple) else [layer.input]
    return [t._keras_history.operation for t in inputs]


def layer_multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-accumulate operations of ``layer`` for one image (one sample) in a forward pass.

    Counted: ``Conv2D`` (``H_out * W_out * k_h * k_w * C_in * C_out``), ``DepthwiseConv2D``
    (``H_out * W_out * k_h * k_w * C_in * depth_multiplier``), ``SeparableConv2D`` (its depthwise
    part plus the 1x1 pointwise part ``H_out * W_out * C_in * depth_multiplier * C_out``) and
    ``Dense`` (``inputs * units`` per position). Biases, activations, batch norm, pooling and
    concatenation are not counted (they are a few operations per value, not per weight).
    """
    if isinstance(layer, keras.layers.SeparableConv2D):
        _, h, w, c_out = _shape(layer.output)
        c_in = _shape(layer.input)[-1]
        kh, kw = _pair(layer.kernel_size)
        dm = layer.depth_multiplier
        return int(h * w * kh * kw * c_in * dm + h * w * c_in * dm * c_out)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        _, h, w, _ = _shape(layer.output)
        c_in = _shape(layer.input)[-1]
        kh, kw = _pair(layer.kernel_size)
        return int(h * w * kh * kw * c_in * layer.depth_multiplier)
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, c_out = _shape(layer.output)
        c_in = _shape(layer.input)[-1]
        kh, kw = _pair(layer.kernel_size)
        return int(h * w * kh * kw * (c_in // layer.groups) * c_out)
    if isinstance(layer, keras.layers.Dense):
        in_shape = _shape(layer.input)
        positions = int(np.prod(in_shape[1:-1])) if len(in_shape) > 2 else 1
        return int(positions * in_shape[-1] * layer.units)
    return 0


def multiply_adds(model: keras.Model) -> int:
    """Total multiply-accumulate operations (MACs) of one image's forward pass through ``model``.

    The sum of :func:`layer_multiply_adds` over the layers. A training step costs roughly three
    times this per image (forward, plus gradients with respect to activations and to weights).
    """
    return sum(layer_multiply_adds(layer) for layer in model.layers)


def receptive_fields(model: keras.Model) -> dict[str, tuple[int, int]]:
    """Receptive field and jump of every layer with a spatial (4-D) output.

    Returns ``{layer name: (receptive field, jump)}`` in pixels of the input image: a value of
    the layer's output map depends on an ``rf x rf`` window of the input, and neighbouring output
    values are ``jump`` input pixels apart. Per layer with kernel ``k``, stride ``s`` and dilation
    ``d``: ``rf_out = rf_in + (k - 1) * d * jump_in`` and ``jump_out = jump_in * s``. Convolutions
    and poolings change them; other layers (batch norm, activations, dropout) pass them through;
    where branches merge (``Add``, ``Concatenate``) the largest field is kept. Global pooling and
    dense layers see the whole image and are left out.
    """
    fields: dict[str, tuple[int, int]] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            fields[layer.name] = (1, 1)
            continue
        if len(_shape(layer.output)) != 4:
            continue
        parents = [p for p in _input_layers(layer) if p.name in fields]
        if not parents:
            continue
        rf_in = max(fields[p.name][0] for p in parents)
        jump_in = max(fields[p.name][1] for p in parents)
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.SeparableConv2D):
            k, s, d = _pair(layer.kernel_size)[0], _pair(layer.strides)[0], _pair(layer.dilation_rate)[0]
        elif isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            k, s, d = _pair(layer.pool_size)[0], _pair(layer.strides)[0], 1
        else:
            k, s, d = 1, 1, 1
        fields[layer.name] = (rf_in + (k - 1) * d * jump_in, jump_in * s)
    return fields


def model_summary_table(model: keras.Model) -> pd.DataFrame:
    """One row per layer of ``model``: what it is, what it outputs, what it holds and costs.

    Columns: ``layer`` (name), ``type`` (class name), ``output shape`` (without the batch axis,
    as a string like ``"80x80x32"``), ``params`` (int), ``share`` (of all parameters, 0..1),
    ``MACs`` (multiply-adds per image, :func:`layer_multiply_adds`), ``receptive field`` (pixels,
    :func:`receptive_fields`; empty for non-spatial layers).
    """
    total = model.count_params()
    fields = receptive_fields(model)
    rows = []
    for layer in model.layers:
        shape = _shape(layer.output)[1:]
        rf = fields.get(layer.name)
        rows.append(
            {
                "layer": layer.name,
                "type": type(layer).__name__,
                "output shape": "x".join(str(d) for d in shape),
                "params": int(layer.count_params()),
                "share": layer.count_params() / total if total else 0.0,
                "MACs": layer_multiply_adds(layer),
                "receptive field": rf[0] if rf else pd.NA,
            }
        )
    table = pd.DataFrame(rows)
    table["receptive field"] = table["receptive field"].astype("Int64")
    return table


def block_table(model: keras.Model, prefixes: list[str] | None = None) -> pd.DataFrame:
    """Aggregate :func:`model_summary_table` into blocks by the layer-name prefix before ``_``.

    Returns one row per block (in order of first appearance): ``block``, ``params``, ``share``,
    ``MACs``, ``output shape`` and ``receptive field`` of the block's last spatial layer. The input
    layer is left out; layers whose prefix is not in ``prefixes`` (default: every prefix) are grouped under ``"head"``.
    """
    table = model_summary_table(model)
    table = table[table["type"] != "InputLayer"]
    prefix = table["layer"].str.split("_").str[0]
    if prefixes is not None:
        prefix = prefix.where(prefix.isin(prefixes), "head")
    table = table.assign(block=prefix)
    rows = []
    for block, part in table.groupby("block", sort=False):
        spatial = part[part["receptive field"].notna()]
        last = spatial.iloc[-1] if len(spatial) else part.iloc[-1]
        rows.append(
            {
                "block": block,
                "params": int(part["params"].sum()),
                "share": float(part["share"].sum()),
                "MACs": int(part["MACs"].sum()),
                "output shape": last["output shape"],
                "receptive field": last["receptive field"],
            }
        )
    return pd.DataFrame(rows)


def build_training_state(model: keras.Model) -> keras.Model:
    """Create a compiled ``model``'s optimizer and metric variables now, so its training step is traced once.

    Without a distribution strategy, Keras creates the optimizer's slots (Adam's two moments per weight)
    and the compiled loss's and metrics' variables while TensorFlow traces the first training step into a
    graph. A ``tf.function`` that creates variables is traced a second time, without creating them, and
    the second trace is the one that runs. Creating them first leaves one trace, and the same graph. Measured
    on 2 CPU cores, 2 epochs at 64 px on 64 images per split: the ``improved`` recipe took 7 s instead of 10-11 s,
    the ``paper`` recipe 16 s instead of 18-22 s, with the same history and predictions to the last byte (and
    lesson 08's ``control_64`` retrained byte-identical to its committed results). ``tests/test_models.py``
    checks the single trace and the identical weights.

    Public API only: one eager forward pass on a zero image, ``compute_loss`` and ``compute_metrics`` on it
    (they build their variables on first use), ``optimizer.build`` unless already built (a model loaded from
    a ``.keras`` file), and ``reset_metrics`` so no count is left over. Under a strategy with several
    replicas it does nothing: ``fit`` then builds all of this itself before it traces. Nor on a model that has
    not been built (a ``Sequential`` without an ``Input``, whose input shape is not known yet): its first
    trace builds it, as before.

    Args:
        model: a compiled model with one image input and one softmax output.

    Returns:
        ``model``, for chaining.
    """
    import tensorflow as tf

    if getattr(model, "optimizer", None) is None:
        raise ValueError("build_training_state needs a compiled model: call model.compile(...) first")
    if not model.built or (tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1):
        return model
    x = keras.ops.zeros((1, *model.inputs[0].shape[1:]))
    y = keras.ops.one_hot(keras.ops.zeros((1,), "int32"), int(model.outputs[0].shape[-1]))
    y_pred = model(x, training=False)
    model.compute_loss(x, y, y_pred)
    model.compute_metrics(x, y, y_pred, None)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.reset_metrics()
    return model


def training_throughput(
    model: keras.Model, batch_size: int = 32, steps: int = 10, warmup: int = 2, seed: int = 0
) -> float:
    """Measure images per second of a training step of ``model`` on random in-memory arrays.

    Compiles ``model`` (Adam, categorical cross-entropy: the paper's setting), runs ``warmup``
    untimed ``train_on_batch`` steps (graph tracing), then times ``steps`` steps on one fixed
    random batch of ``batch_size`` images with random one-hot targets (as many classes as the
    model has outputs). No input pipeline is involved, so this is the model's
    own cost on this machine: compare models on the same machine, at the same moment.

    Returns:
        ``batch_size * steps / seconds``.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps!r}")
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *_shape(model.input)[1:]), dtype=np.float32)
    n_classes = int(_shape(model.output)[-1])
    y = keras.utils.to_categorical(rng.integers(0, n_classes, batch_size), n_classes)
    model.compile(optimizer=keras.optimizers.Adam(4e-4), loss="categorical_crossentropy")
    build_training_state(model)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch_size * steps / (time.perf_counter() - start)


def recalibrate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int = 128) -> keras.Model:
    """Return a copy of ``model`` whose batch-norm running means and variances are re-estimated on ``images``.

    Layer by layer, in order: each batch-norm layer gets the per-channel mean and variance of its input
    over ``images`` (float32 ``[N, H, W, C]`` in [0, 1]), computed with the layers before it already
    re-estimated. No weight is trained; ``model`` itself is not changed. On unlabelled images of a new
    set this is AdaBN (Li et al., 2016); on clean training images it undoes statistics that an
    augmentation put out of step with clean inputs (lesson 06).
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in [lay for lay in copy.layers if isinstance(lay, keras.layers.BatchNormalization)]:
        probe = keras.Model(copy.input, layer.input)
        acts = np.concatenate([keras.ops.convert_to_numpy(probe(images[i:i + batch_size], training=False))
                               for i in range(0, len(images), batch_size)])
        axes = tuple(range(acts.ndim - 1))
        layer.moving_mean.assign(acts.mean(axis=axes))
        layer.moving_variance.assign(acts.var(axis=axes))
    return copy
