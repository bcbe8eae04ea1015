"""cxr_utils.data: manifest validation, the decoded-image cache (keying, invalidation, corruption)
and the tf.data pipeline (seeded shuffles, augmentation on train only).

Most tests run on a small real manifest: 15 images per class copied from the mirror into
tmp_path (COVID-19 from the Cohen collection, Normal and Pneumonia from the Kaggle set).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import CLASSES, data, paths, preprocess
from cxr_utils.images import ImageError, read_image

PER_CLASS = 15  # 9 train, 3 val, 3 test per class


def build_small_data_dir(root: Path, src: Path, per_class: int = PER_CLASS) -> Path:
    """Copy ``per_class`` real images per class from the mirror ``src`` into ``root/raw`` and write a manifest."""
    meta = pd.read_csv(src / "covid-chestxray-dataset" / "metadata.csv", encoding="latin-1")
    meta = meta[(meta["folder"] == "images") & meta["finding"].astype(str).str.startswith("COVID-19")
                & (meta["modality"] == "X-ray") & meta["view"].isin(["PA", "AP"])].drop_duplicates("filename")
    covid = [f"covid-chestxray-dataset/images/{f}" for f in meta["filename"]
             if (src / "covid-chestxray-dataset" / "images" / f).is_file()][:per_class]
    kaggle = {lab: [f"chest_xray/train/{folder}/{p.name}"
                    for p in sorted((src / "chest_xray" / "train" / folder).iterdir())[:per_class]]
              for lab, folder in (("Normal", "NORMAL"), ("Pneumonia", "PNEUMONIA"))}
    n_eval = max(1, per_class // 5)
    splits = ["train"] * (per_class - 2 * n_eval) + ["val"] * n_eval + ["test"] * n_eval
    rows = []
    for label, files in (("COVID-19", covid), ("Normal", kaggle["Normal"]), ("Pneumonia", kaggle["Pneumonia"])):
        for i, (rel, split) in enumerate(zip(files, splits, strict=True)):
            dst = root / "raw" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst)
            rows.append({"path": f"raw/{rel}", "label": label, "source": "test", "patient_id": f"{label}-{i}",
                         "view": "PA", "split": split})
    paths.curated_dir(root).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(paths.manifest_path(root), index=False)
    return root


@pytest.fixture(scope="module")
def _small_template(tmp_path_factory, mirror) -> Path:
    return build_small_data_dir(tmp_path_factory.mktemp("cxr_template"), mirror)


@pytest.fixture
def data_dir(_small_template, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the small real data dir, set as CXR_DATA_DIR, with an empty cache."""
    root = tmp_path / "data"
    shutil.copytree(_small_template, root, copy_function=shutil.copy2)
    monkeypatch.setenv("CXR_DATA_DIR", str(root))
    data.clear_memory()
    yield root
    data.clear_memory()


def cache_files(root: Path, pattern: str = "images_*.npz") -> list[Path]:
    return sorted(paths.cache_dir(root).glob(pattern))


# --- manifest ---------------------------------------------------------------------------------


def test_load_manifest_names_the_file_and_the_fix_when_it_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path))
    with pytest.raises(data.ManifestError, match=r"manifest\.csv.*not found.*cxr-data curate"):
        data.load_manifest()


def test_load_manifest_names_a_missing_column(data_dir):
    df = pd.read_csv(paths.manifest_path(data_dir)).drop(columns=["patient_id"])
    bad = data_dir / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(data.ManifestError, match=r"bad\.csv.*patient_id.*cxr-data curate"):
        data.load_manifest(bad)


@pytest.mark.parametrize(("column", "value"), [("label", "Tuberculosis"), ("split", "holdout")])
def test_load_manifest_rejects_unknown_labels_and_splits(data_dir, column, value):
    df = pd.read_csv(paths.manifest_path(data_dir))
    df.loc[3, column] = value
    bad = data_dir / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(data.ManifestError, match=value):
        data.load_manifest(bad)


@pytest.mark.parametrize(("column", "row", "value", "message"), [
    ("label", 3, "", r"label.*<empty>"), ("split", 4, "", r"split.*<empty>"), ("path", 5, "", "empty path"),
    ("path", 6, "DUPLICATE", "more than once")])
def test_load_manifest_rejects_empty_labels_splits_and_paths_and_repeated_paths(data_dir, column, row, value,
                                                                                 message):
    df = pd.read_csv(paths.manifest_path(data_dir))
    df.loc[row, column] = df.loc[0, "path"] if value == "DUPLICATE" else value
    bad = data_dir / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(data.ManifestError, match=rf"bad\.csv.*{message}.*cxr-data curate"):
        data.load_manifest(bad)


def test_a_manifest_row_whose_image_was_deleted_names_it_and_the_fix(data_dir):
    df = data.load_manifest()
    gone = data_dir / df["path"].iloc[7]
    gone.unlink()
    with pytest.raises(ImageError, match=gone.name + ".*file not found.*cxr-data fetch"):
        data.load_split("train", image_size=40)


def test_the_manifest_fingerprint_changes_with_any_cell_and_not_with_a_reread(data_dir):
    df = data.load_manifest()
    assert data.manifest_sha256(df) == data.manifest_sha256(data.load_manifest())
    changed = df.copy()
    changed.loc[2, "split"] = "val" if changed.loc[2, "split"] != "val" else "test"
    assert data.manifest_sha256(changed) != data.manifest_sha256(df)


def test_load_manifest_accepts_the_manifest_that_cxr_data_curate_writes(curated_data_dir, monkeypatch):
    monkeypatch.setenv("CXR_DATA_DIR", str(curated_data_dir))
    df = data.load_manifest()
    assert set(df["split"]) == {"train", "val", "test"}
    assert set(df["label"]) == set(CLASSES)


# --- load_split and the cache -----------------------------------------------------------------


def test_load_split_returns_uint8_images_and_class_indices_in_manifest_order(data_dir):
    x, y = data.load_split("val", image_size=48, channels=3)
    df = data.load_manifest()
    val = df[df["split"] == "val"]
    assert x.shape == (len(val), 48, 48, 3) and x.dtype == np.uint8
    assert y.tolist() == [CLASSES.index(v) for v in val["label"]]
    first = read_image(data_dir / val["path"].iloc[0], channels=3, size=(48, 48))
    np.testing.assert_array_equal(x[0], first)


def test_load_split_with_one_channel_gives_a_trailing_channel_axis(data_dir):
    x, _ = data.load_split("test", image_size=32, channels=1)
    assert x.shape[1:] == (32, 32, 1)


def test_the_cache_is_built_once_and_then_read_without_decoding(data_dir, monkeypatch):
    first, _ = data.load_split("train", image_size=40)
    assert len(cache_files(data_dir)) == 1
    data.clear_memory()

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded although the cache is valid")

    monkeypatch.setattr(preprocess, "read_image", no_decoding)
    again, _ = data.load_split("train", image_size=40)
    np.testing.assert_array_equal(first, again)


def test_a_changed_manifest_rebuilds_the_cache_and_removes_the_old_one(data_dir):
    data.load_split("train", image_size=40)
    old = cache_files(data_dir)
    df = pd.read_csv(paths.manifest_path(data_dir))
    df.iloc[1:].to_csv(paths.manifest_path(data_dir), index=False)  # drop the first (train) image
    data.clear_memory()
    x, _ = data.load_split("train", image_size=40)
    new = cache_files(data_dir)
    assert len(new) == 1 and new != old
    assert len(x) == (df["split"] == "train").sum() - 1


def test_a_changed_label_in_the_manifest_is_seen_at_once(data_dir):
    _, y = data.load_split("test", image_size=40)
    df = pd.read_csv(paths.manifest_path(data_dir))
    i = int(np.flatnonzero(df["split"] == "test")[0])
    df.loc[i, "label"] = "Pneumonia" if df.loc[i, "label"] != "Pneumonia" else "Normal"
    df.to_csv(paths.manifest_path(data_dir), index=False)
    _, y2 = data.load_split("test", image_size=40)
    assert y2[0] == CLASSES.index(df.loc[i, "label"]) != y[0]


def test_each_image_size_and_channel_count_has_its_own_cache(data_dir):
    a, _ = data.load_split("train", image_size=40)
    b, _ = data.load_split("train", image_size=48)
    c, _ = data.load_split("train", image_size=48, channels=1)
    assert a.shape[1:] == (40, 40, 3) and b.shape[1:] == (48, 48, 3) and c.shape[1:] == (48, 48, 1)
    names = [p.name for p in cache_files(data_dir)]
    assert len(names) == 3
    assert {n.split("_")[1] + "_" + n.split("_")[2] for n in names} == {"40px_3ch", "48px_3ch", "48px_1ch"}


def test_a_replaced_image_file_is_never_read_from_a_stale_cache(data_dir):
    x, _ = data.load_split("test", image_size=40)
    df = data.load_manifest()
    test_rows = df[df["split"] == "test"]
    target, donor = data_dir / test_rows["path"].iloc[0], data_dir / test_rows["path"].iloc[-1]
    shutil.copyfile(donor, target)  # same name, other picture
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    data.clear_memory()
    x2, _ = data.load_split("test", image_size=40)
    np.testing.assert_array_equal(x2[0], x[-1])
    assert not np.array_equal(x2[0], x[0])


@pytest.mark.parametrize("damage", ["truncate", "flip_pixel_bytes", "garbage"])
def test_a_corrupted_cache_is_detected_and_rebuilt(data_dir, damage):
    x, _ = data.load_split("train", image_size=40)
    (path,) = cache_files(data_dir)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip_pixel_bytes":
        mid = len(raw) // 2
        raw[mid : mid + 64] = bytes(255 - b for b in raw[mid : mid + 64])
    else:
        raw = bytearray(b"not a cache file at all")
    path.write_bytes(bytes(raw))
    data.clear_memory()
    with pytest.warns(UserWarning, match="rebuilding"):
        x2, _ = data.load_split("train", image_size=40)
    np.testing.assert_array_equal(x, x2)
    data.clear_memory()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.load_split("train", image_size=40)  # the rebuilt file is valid again


def test_an_undecodable_image_raises_naming_it_and_leaves_no_cache_or_temp_file(data_dir):
    df = data.load_manifest()
    broken = data_dir / df["path"].iloc[2]
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    with pytest.raises(ImageError, match=broken.name + ".*cxr-data fetch"):
        data.load_split("train", image_size=40)
    folder = paths.cache_dir(data_dir)
    assert (list(folder.iterdir()) if folder.exists() else []) == []


def test_parallel_decoding_gives_the_same_pixels_as_serial(data_dir):
    df = data.load_manifest()
    files = [data_dir / p for p in df["path"]]
    serial = preprocess.read_many(files, 36, 3, workers=1)
    parallel = preprocess.read_many(files, 36, 3, workers=2)
    np.testing.assert_array_equal(serial, parallel)


def test_subset_is_stratified_by_class_and_repeats_with_its_seed(data_dir):
    _, y_all = data.load_split("train", image_size=40)
    x, y = data.load_split("train", image_size=40, subset=12, seed=1)
    _, y_same = data.load_split("train", image_size=40, subset=12, seed=1)
    assert len(y) == 12 and x.shape[0] == 12
    assert np.bincount(y, minlength=3).tolist() == [4, 4, 4]  # the full train split is balanced 9/9/9
    np.testing.assert_array_equal(y, y_same)
    picks = {tuple(data.stratified_subset(y_all, 12, seed=s)) for s in range(5)}
    assert len(picks) > 1  # other seeds pick other images


def test_stratified_subset_keeps_the_class_shares_of_an_unbalanced_set():
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    idx = data.stratified_subset(labels, 20, seed=0)
    assert np.bincount(labels[idx]).tolist() == [2, 6, 12]
    assert np.all(np.diff(idx) > 0)


# --- make_dataset -----------------------------------------------------------------------------


def _epoch(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def test_make_dataset_gives_float_images_in_unit_range_and_one_hot_labels(data_dir):
    ds = data.make_dataset("val", image_size=40, batch_size=4)
    x, y = _epoch(ds)
    assert x.dtype == np.float32 and x.shape[1:] == (40, 40, 3)
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert y.dtype == np.float32 and y.shape[1] == 3
    np.testing.assert_array_equal(y.sum(axis=1), 1.0)
    _, ints = _epoch(data.make_dataset("val", image_size=40, batch_size=4, one_hot=False))
    np.testing.assert_array_equal(ints, y.argmax(axis=1))


@pytest.mark.parametrize("augment", [None, "paper", "recommended"])
def test_a_seeded_training_pipeline_repeats_exactly_and_each_epoch_differs(data_dir, augment):
    ds1 = data.make_dataset("train", image_size=40, batch_size=8, augment=augment, seed=7)
    ds2 = data.make_dataset("train", image_size=40, batch_size=8, augment=augment, seed=7)
    a1, b1 = _epoch(ds1), _epoch(ds2)
    np.testing.assert_array_equal(a1[0], b1[0])
    np.testing.assert_array_equal(a1[1], b1[1])
    a2 = _epoch(ds1)
    assert not np.array_equal(a1[0], a2[0])  # reshuffled (and re-augmented) in the second epoch
    other = _epoch(data.make_dataset("train", image_size=40, batch_size=8, augment=augment, seed=8))
    assert not np.array_equal(a1[0], other[0])


@pytest.mark.parametrize("split", ["val", "test"])
def test_augmentation_is_refused_on_validation_and_test(data_dir, split):
    with pytest.raises(ValueError, match=f"'{split}'.*only 'train'"):
        data.make_dataset(split, augment="paper")


def test_the_test_split_is_never_augmented_nor_shuffled(data_dir):
    x, y = data.load_split("test", image_size=40)
    got_x, got_y = _epoch(data.make_dataset("test", image_size=40, batch_size=5, one_hot=False))
    np.testing.assert_array_equal(got_x, x.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(got_y, y)


def test_the_paper_policy_reads_a_96_pixel_cache_and_returns_80_pixel_images(data_dir):
    x, _ = next(iter(data.make_dataset("train", image_size=80, batch_size=4, augment="paper")))
    assert x.shape == (4, 80, 80, 3)
    assert [p.name.split("_")[1] for p in cache_files(data_dir)] == ["96px"]


def test_an_unknown_policy_name_is_refused_with_the_choices(data_dir):
    with pytest.raises(ValueError, match="unknown augmentation policy .heavy.*paper.*recommended.*strong"):
        data.make_dataset("train", augment="heavy")
