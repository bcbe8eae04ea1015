"""Mixed precision: what the hardware offers, and whether it pays here.

Keras' mixed precision computes most layers in 16-bit floats while keeping the weights, the output
layer and the loss in float32. It pays only where the hardware computes 16-bit floats natively:

- ``"mixed_bfloat16"`` on CPUs with AVX-512 BF16 or AMX (recent Xeon and EPYC) and on GPUs of compute
  capability 8.0 or more (A100, RTX 30xx and later);
- ``"mixed_float16"`` on other GPUs with tensor cores (compute capability 7.0 or more: V100, T4 ...);
- ``"float32"`` everywhere else. On a CPU without native bf16 the 16-bit types are emulated, and
  training is several times *slower* (measured: 2.7 against 16 images/s for the paper's network).

:func:`choose` turns a request into a policy. ``"auto"`` (the recipes' default) picks the 16-bit
policy only where the hardware has it **and** a short probe of a few training steps of the recipe's
own network (:func:`probe`) shows it faster than float32 by at least 5 %: it never slows a run down.
A run records the policy it used in its ``config.json`` and why in ``environment.json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICIES: tuple[str, ...] = ("float32", "mixed_bfloat16", "mixed_float16")
"""The policies a recipe may ask for, besides ``"auto"``."""

MIN_GAIN = 1.05
"""``"auto"`` picks a 16-bit policy only when the probe measures it at least this many times faster."""


@dataclass(frozen=True)
class Hardware:
    """What the device that will train can compute natively."""

    device: str
    """``"gpu"`` when TensorFlow sees a GPU (it trains there), else ``"cpu"``."""
    name: str
    bf16: bool
    """Native bfloat16 arithmetic (CPU: AVX-512 BF16 or AMX; GPU: compute capability 8.0+)."""
    fp16: bool
    """Fast float16 (GPU tensor cores, compute capability 7.0+)."""


def _cpu_flags() -> tuple[str, set[str]]:
    name, flags = "CPU", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name == "CPU":
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return name, flags


def hardware() -> Hardware:
    """Return what the device TensorFlow trains on can compute natively (the first GPU, else the CPU)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        major, minor = details.get("compute_capability", (0, 0)) or (0, 0)
        cc = major + minor / 10
        return Hardware("gpu", details.get("device_name", "GPU"), bf16=cc >= 8.0, fp16=cc >= 7.0)
    name, flags = _cpu_flags()
    return Hardware("cpu", name, bf16=bool(flags & {"avx512_bf16", "amx_bf16"}), fp16=False)


def candidate(hw: Hardware) -> str:
    """The 16-bit policy ``hw`` has native support for, or ``"float32"`` when it has none."""
    if hw.bf16:
        return "mixed_bfloat16"
    if hw.device == "gpu" and hw.fp16:
        return "mixed_float16"
    return "float32"


@contextlib.contextmanager
def policy(name: str) -> Iterator[None]:
    """Build layers under Keras' global dtype policy ``name`` inside the block; restore the previous one after."""
    import keras

    if name not in POLICIES:
        raise ValueError(f"precision must be one of {list(POLICIES)} or 'auto', got {name!r}")
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def probe(build: Callable[[], Any], name: str, image_size: int, channels: int = 3, batch_size: int = 32,
          steps: int = 4) -> float:
    """Images per second of ``steps`` training steps of the network ``build()`` makes, under policy ``name``.

    That network's :func:`cxr_utils.models.training_throughput` under the policy: one untimed step first (it
    traces the graph), then random in-memory images, so only the network's own arithmetic is measured.

    Raises:
        ValueError: ``build()`` made a network whose input is not ``image_size`` x ``image_size`` x ``channels``.
    """
    from cxr_utils import models

    with policy(name):
        model = build()
        shape = tuple(model.inputs[0].shape[1:])
        if shape != (image_size, image_size, channels):
            raise ValueError(f"the network takes {shape} images, not {(image_size, image_size, channels)}")
        return models.training_throughput(model, batch_size=batch_size, steps=steps, warmup=1)


def choose(requested: str, measure: Callable[[str], float] | None = None,
           hw: Hardware | None = None) -> tuple[str, str]:
    """Turn ``requested`` (``"auto"`` or one of :data:`POLICIES`) into a policy; return it and why.

    Args:
        requested: ``"auto"`` or a policy name (used as asked).
        measure: ``measure(policy) -> images/s`` (:func:`probe` of the recipe's network); called only
            when the hardware has a 16-bit candidate.
        hw: the hardware (default :func:`hardware`).
    """
    if requested != "auto":
        if requested not in POLICIES:
            raise ValueError(f"precision must be one of {list(POLICIES)} or 'auto', got {requested!r}")
        return requested, "asked for"
    hw = hw or hardware()
    mixed = candidate(hw)
    if mixed == "float32":
        return "float32", f"auto: {hw.name} has no native bfloat16 or float16 arithmetic"
    if measure is None:
        raise ValueError("precision='auto' on hardware with 16-bit support needs a probe (measure=...)")
    fast, slow = measure(mixed), measure("float32")
    if fast >= MIN_GAIN * slow:
        return mixed, (f"auto: {hw.name} has native 16-bit arithmetic; the probe measured {fast:.1f} images/s "
                       f"against {slow:.1f} in float32")
    return "float32", (f"auto: {hw.name} has native 16-bit arithmetic, but the probe measured {fast:.1f} images/s "
                       f"against {slow:.1f} in float32, so float32")
