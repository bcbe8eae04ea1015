"""Lesson 08's experiments: the input masks, the source target, the external Normals' split and the extra
training images, the error-analysis properties, the source report and the ages."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_utils import CLASSES, data, errors, external, models, runs, saliency, shortcuts, train
from cxr_utils.images import read_image


@pytest.mark.parametrize("kind", models.MASKS)
def test_an_input_mask_blacks_out_exactly_its_part_and_reloads_with_the_run(tmp_path, kind):
    mask = models.input_mask(kind, 64)[..., 0]
    model = models.efficient_cnn(64, width=0.25, input_mask=kind)
    probe = keras.Model(model.input, model.get_layer("input_mask").output)
    out = keras.ops.convert_to_numpy(probe(np.ones((1, 64, 64, 3), np.float32)))[0, ..., 0]
    np.testing.assert_array_equal(out, mask)
    model.save(tmp_path / runs.BEST_MODEL_FILE)
    reloaded = runs.load_model(tmp_path)  # registers the course's layers itself
    assert reloaded.get_layer("input_mask").kind == kind


def test_hiding_the_lungs_hides_the_lung_fields_and_the_border_strip_holds_none_of_them():
    lungs = saliency.lung_mask(64)
    assert (models.input_mask("hide_lungs", 64)[..., 0][lungs] == 0).all()
    assert (models.input_mask("border_only", 64)[..., 0][lungs] == 0).all()
    assert 0.3 < models.input_mask("border_only", 64).mean() < 0.4


def test_the_source_target_labels_each_image_with_its_collection(curated_data_dir):
    manifest = data.load_manifest()
    _, y = data.load_split("test", 32, 3, manifest, target="source")
    expected = manifest[manifest["split"] == "test"]["source"].map(data.TARGETS["source"].index).to_numpy()
    np.testing.assert_array_equal(y, expected)
    with pytest.raises(ValueError, match="target must be one of"):
        data.load_split("test", 32, 3, manifest, target="hospital")


def test_the_external_normals_split_is_fixed_disjoint_and_blind_to_the_images(external_dir, tmp_path):
    chosen, kept = external.split_normals(external_dir)
    assert len(chosen) == len(kept) == 150 and not set(chosen["path"]) & set(kept["path"])
    normals = external.external_images(external_dir).query("label == 'Normal'")
    assert set(chosen["path"]) | set(kept["path"]) == set(normals["path"])
    again, _ = external.split_normals(external_dir)
    pd.testing.assert_frame_equal(chosen, again)
    testing = external.kept_for_testing(external_dir)
    assert set(testing["path"]) & set(chosen["path"]) == set() and (testing["label"] == "COVID-19").sum() == 300


def test_kept_calls_counts_only_the_kept_images_and_each_call_once(external_dir):
    ext = external.external_images(external_dir).sort_values("path").reset_index(drop=True)
    _, kept = external.split_normals(external_dir)
    is_kept_normal = ext["path"].isin(set(kept["path"])).to_numpy()
    probs = np.tile([0.1, 0.8, 0.1], (len(ext), 1))  # every image called Normal ...
    probs[ext["label"].to_numpy() == "COVID-19"] = [0.7, 0.2, 0.1]  # ... but the COVID-19 ones, called COVID-19,
    probs[np.flatnonzero(is_kept_normal)[:10]] = [0.6, 0.3, 0.1]  # and 10 kept Normals called COVID-19
    probs[np.flatnonzero(~is_kept_normal & (ext["label"] == "Normal").to_numpy())] = [0.9, 0.05, 0.05]  # not kept
    df = ext.assign(**{f"p_{c}": probs[:, i] for i, c in enumerate(CLASSES)})
    table = external.kept_calls({"a run": df}, external_dir)
    counts = {figure: (row.k, row.n) for (figure, _), row in table.iterrows()}
    assert counts == {"kept adult Normals called COVID-19": (10, 150), "kept adult Normals called Normal": (140, 150),
                      "external COVID-19 called COVID-19": (300, 300)}
    row = table.loc[("kept adult Normals called COVID-19", "a run")]
    assert row.share == pytest.approx(10 / 150) and row.wilson_low < row.share < row.wilson_high


def test_extra_training_images_join_the_training_split_only(external_dir, curated_data_dir, monkeypatch):
    monkeypatch.setenv("CXR_EXTERNAL_DIR", str(external_dir))
    files, labels = external.extra_training_images("external_normals")
    assert len(files) == 150 and (labels == 1).all()
    plain = data.make_dataset("train", image_size=32, batch_size=1000, subset=48, one_hot=False)
    more = data.make_dataset("train", image_size=32, batch_size=1000, subset=48, one_hot=False,
                             extra=(files[:5], labels[:5]))
    assert sum(len(b[1]) for b in more) == sum(len(b[1]) for b in plain) + 5
    with pytest.raises(ValueError, match="'train' split only"):
        data.make_dataset("val", image_size=32, extra=(files[:5], labels[:5]))
    config = train.resolve_config("deconfounded", subset=48)
    assert train.data_fingerprint(config)["extra_train"]["images"] == 150


def test_properties_see_a_black_frame_and_white_corner_labels(tmp_path, mirror):
    src = sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0]
    grey = read_image(src, channels=1)
    framed = np.pad(grey, 40)  # a black frame, as a scanned film
    labelled = grey.copy()
    labelled[:30, :30] = 255  # a burnt-in marker in a corner
    for name, arr in (("plain.png", grey), ("framed.png", framed), ("labelled.png", labelled)):
        Image.fromarray(arr).save(tmp_path / name)
    props = errors.image_properties(["plain.png", "framed.png", "labelled.png"], tmp_path)
    assert props.loc["framed.png", "black_border"] > props.loc["plain.png", "black_border"] + 0.3
    assert props.loc["labelled.png", "white_corners"] > props.loc["plain.png", "white_corners"]
    assert props.loc["framed.png", "width"] == grey.shape[1] + 80 and props.loc["plain.png", "aspect"] == pytest.approx(
        grey.shape[1] / grey.shape[0])


def test_compare_groups_finds_a_shift_and_none_between_halves_of_one_group():
    rng = np.random.default_rng(0)
    n = 200
    units = pd.DataFrame({"path": [f"i{i}" for i in range(n)], "split_group": [f"g{i // 2}" for i in range(n)]})
    props = pd.DataFrame({"brightness": rng.normal(0.5, 0.05, n)})
    a = np.arange(n) % 2 == 0
    same = errors.compare_groups(props, a, ~a, units, n_boot=300)
    assert same.loc["brightness", "ci_low"] < 0 < same.loc["brightness", "ci_high"]
    props.loc[a, "brightness"] += 0.1
    shifted = errors.compare_groups(props, a, ~a, units, n_boot=300)
    assert shifted.loc["brightness", "ci_low"] > 0.05


def test_the_source_report_of_perfect_calls_is_one_for_every_present_source(curated_data_dir):
    test = data.load_manifest().query("split == 'test'")
    pred = test[["path", "source", "label", "split_group"]].reset_index(drop=True)
    for s in shortcuts.SOURCES:
        pred[f"p_{s}"] = (pred["source"] == s).astype(float)
    report = shortcuts.source_report(pred, n_boot=100)
    present = set(test["source"])
    for s in present:
        assert report.loc[f"recall {s}", "estimate"] == 1.0
    assert report.loc["accuracy", "estimate"] == 1.0
    assert report.loc["chance (always the largest source)", "estimate"] == pytest.approx(
        (test["source"] == "kaggle").mean())


def test_ages_are_adult_for_covid_and_missing_for_the_kaggle_children(curated_data_dir):
    table = shortcuts.ages()
    assert table.loc[("COVID-19", "cohen"), "median"] > 40
    assert table.loc[("Normal", "kaggle"), "with an age"] == 0 and table.loc[("Pneumonia", "kaggle"), "images"] > 0

