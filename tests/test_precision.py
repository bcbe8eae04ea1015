"""cxr_utils.precision: mixed precision only where the hardware has it and a probe shows it faster."""

from __future__ import annotations

import json

import keras
import pytest

from cxr_utils import precision, runs, train

BF16_CPU = precision.Hardware("cpu", "a CPU with AVX-512 BF16", bf16=True, fp16=False)
PLAIN_CPU = precision.Hardware("cpu", "a CPU without it", bf16=False, fp16=False)
OLD_GPU = precision.Hardware("gpu", "a T4", bf16=False, fp16=True)


def test_auto_never_probes_or_mixes_where_the_hardware_has_no_16_bit_arithmetic():
    def never(policy):
        raise AssertionError("no probe on hardware without native 16-bit arithmetic")

    assert precision.choose("auto", never, PLAIN_CPU)[0] == "float32"


@pytest.mark.parametrize(("fast", "expected"), [(20.0, "mixed_bfloat16"), (10.4, "float32"), (5.0, "float32")])
def test_auto_picks_the_16_bit_policy_only_when_the_probe_measures_it_faster(fast, expected):
    rates = {"mixed_bfloat16": fast, "float32": 10.0}
    chosen, why = precision.choose("auto", rates.__getitem__, BF16_CPU)
    assert chosen == expected and f"{fast:.1f}" in why and "10.0" in why


def test_candidates_follow_the_hardware():
    assert precision.candidate(BF16_CPU) == "mixed_bfloat16"
    assert precision.candidate(OLD_GPU) == "mixed_float16"
    assert precision.candidate(PLAIN_CPU) == "float32"
    assert precision.choose("mixed_float16", None, PLAIN_CPU) == ("mixed_float16", "asked for")
    with pytest.raises(ValueError, match="float32.*mixed_bfloat16"):
        precision.choose("half", None, PLAIN_CPU)


def test_this_machine_is_read_from_the_cpu_flags_or_the_gpu():
    hw = precision.hardware()
    flags = precision._cpu_flags()[1]
    if hw.device == "cpu":
        assert hw.bf16 == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_the_policy_is_restored_after_the_block_and_keeps_the_output_in_float32():
    from cxr_utils import models

    before = keras.config.dtype_policy().name
    with precision.policy("mixed_bfloat16"):
        model = models.efficient_cnn(32, width=0.25)
    assert keras.config.dtype_policy().name == before
    assert model.get_layer("stage1_1_conv").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32" and model.output.dtype == "float32"


def test_a_probe_measures_images_per_second_under_each_policy():
    from cxr_utils import models

    rate = precision.probe(lambda: models.efficient_cnn(32, width=0.25), "float32", 32, steps=2, batch_size=8)
    assert rate > 0
    with pytest.raises(ValueError, match=r"takes \(32, 32, 3\) images, not \(64, 64, 3\)"):
        precision.probe(lambda: models.efficient_cnn(32, width=0.25), "float32", 64, steps=1, batch_size=8)


def test_a_run_records_the_precision_it_used_and_why(curated_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_RUNS_DIR", str(tmp_path))
    folder = train.train_recipe("improved", "bf16", epochs=1, subset=48, image_size=32, precision="mixed_bfloat16",
                                verbose=0)
    config = json.loads((folder / runs.CONFIG_FILE).read_text())
    env = json.loads((folder / runs.ENVIRONMENT_FILE).read_text())
    assert config["precision"] == env["precision"] == "mixed_bfloat16" and env["precision_reason"] == "asked for"
    model = runs.load_model(folder)
    assert model.get_layer("stage1_1_conv").compute_dtype == "bfloat16"
    metrics = json.loads((folder / runs.METRICS_FILE).read_text())
    assert metrics["complete"] and 0 <= metrics["test"]["accuracy"] <= 1
    assert train._precision(config, "auto", folder, restart=False) == ("mixed_bfloat16", "auto: as the run folder "
                                                                         "records (resumed or complete)")
    chosen, why = train._precision(config, "auto", tmp_path / "new-run", restart=False)
    if precision.candidate(precision.hardware()) == "float32":  # this machine: no native 16-bit arithmetic
        assert chosen == "float32" and "no native" in why
    else:
        assert chosen in precision.POLICIES and "probe measured" in why
