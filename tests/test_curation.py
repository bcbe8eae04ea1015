"""Curation on the real mirror: which images are kept, duplicates, and the patient-level split."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_utils import curation, metadata, paths
from cxr_utils.curation import CurationChangedError, CurationConfig, assign_splits, curate, label_for, view_kind
from cxr_utils.sources import MissingSourceError


@pytest.fixture(scope="module")
def result(curated_data_dir: Path) -> curation.CurationResult:
    return curation.load_result(curated_data_dir)


# ------------------------------------------------------------------ rules on metadata values


@pytest.mark.parametrize(
    ("view", "kind"),
    [("PA", "frontal"), ("AP Supine", "frontal"), ("AP erect", "frontal"), ("L", "lateral"),
     ("Axial", "ct"), ("Coronal", "ct"), ("", "unspecified"), ("  ", "unspecified")],
)
def test_view_kind_classifies_the_views_found_in_the_metadata(view: str, kind: str) -> None:
    assert view_kind(view) == kind


@pytest.mark.parametrize(
    ("source", "finding", "label"),
    [("cohen", "COVID-19", "COVID-19"), ("cohen", "COVID-19, ARDS", "COVID-19"),
     ("cohen", "Streptococcus", None), ("cohen", "No Finding", None), ("figure1", "", None),
     ("actualmed", "No finding", None), ("kaggle", "Normal", "Normal"),
     ("kaggle", "Pneumonia (viral)", "Pneumonia"), ("figure1", "Pneumonia", None)],
)
def test_labels_follow_the_paper_for_which_source_feeds_which_class(source, finding, label) -> None:
    assert label_for(source, finding) == label


def test_figure1_metadata_is_latin1_and_read_correctly(mirror: Path) -> None:
    table, encoding = metadata.read_metadata_csv(mirror / "Figure1-COVID-chestxray-dataset/metadata.csv")
    assert encoding == "cp1252"
    assert table["notes"].str.contains("38°").any()  # "Fever 38° + cough", a Latin-1 degree sign


def test_kaggle_patient_ids_come_from_file_names() -> None:
    assert metadata.kaggle_patient("person1_virus_6.jpeg") == "person1"
    assert metadata.kaggle_patient("IM-0115-0001.jpeg") == "IM-0115"
    assert metadata.kaggle_patient("NORMAL2-IM-0095-0001.jpeg") == "NORMAL2-IM-0095"


# ------------------------------------------------------------------ the curated data set


def test_no_ct_and_no_lateral_image_is_kept(result) -> None:
    report = result.report
    kept = report[report["fate"] == "kept"]
    assert not kept["modality"].str.lower().eq("ct").any()
    assert not kept["view"].map(view_kind).isin(["lateral", "ct", "other"]).any()
    # ... and the filters did fire on real rows:
    assert (report["fate"] == "not_xray").sum() > 50 and (report["fate"] == "not_frontal").sum() > 20


def test_covid_candidates_match_the_mirrors_independent_count(result) -> None:
    # PROVENANCE.md counts 427 + 35 + 26 = 488 COVID-19 frontal X-ray files present in the mirror.
    covid = result.report[(result.report["label"] == "COVID-19")]
    before_pixels = covid[covid["fate"].isin(["kept", "unreadable", "duplicate", "conflicting_duplicate"])]
    assert len(before_pixels) == 488


def test_kaggle_test_split_is_kaggle_test_plus_val_less_its_duplicates(result) -> None:
    m = result.manifest
    test = m[(m["split"] == "test") & (m["source"] == "kaggle")]
    # 234 + 8 Normal and 390 + 8 Pneumonia files; PROVENANCE lists 3 + 3 identical pairs within test.
    assert (test["label"] == "Normal").sum() == 242 - 3
    assert (test["label"] == "Pneumonia").sum() == 398 - 3
    assert set(test["kaggle_split"]) == {"test", "val"}


def test_every_patient_group_is_in_exactly_one_split(result) -> None:
    m = result.manifest
    assert (m.groupby("patient_id")["split"].nunique() == 1).all()
    assert (m.groupby("split_group")["split"].nunique() == 1).all()


def test_about_a_fifth_of_covid_images_go_to_test(result) -> None:
    covid = result.manifest[result.manifest["label"] == "COVID-19"]
    share = (covid["split"] == "test").mean()
    assert 0.18 <= share <= 0.24


def test_every_class_has_validation_images(result) -> None:
    val = result.manifest[result.manifest["split"] == "val"]
    assert set(val["label"]) == {"COVID-19", "Normal", "Pneumonia"}


def test_mislabelled_copy_across_sources_is_dropped_with_both_labels_reported(result) -> None:
    # Figure 1's COVID-00020 ("covid 39yo") is Kaggle's paediatric person1004_virus_1686.
    rep = result.report.set_index("path")
    fig = "raw/Figure1-COVID-chestxray-dataset/images/COVID-00020.jpg"
    kag = "raw/chest_xray/train/PNEUMONIA/person1004_virus_1686.jpeg"
    assert rep.at[fig, "fate"] == rep.at[kag, "fate"] == "conflicting_duplicate"
    assert not result.manifest["path"].isin([fig, kag]).any()


def test_one_patient_under_two_ids_is_one_split_group(result) -> None:
    # Cohen patient 178 (eurorad 16660) and patient 97 (radiopaedia) are the same four pictures.
    linked = result.report[result.report["patient_id"].isin(["cohen:178", "cohen:97"])]
    assert linked["split_group"].nunique() == 1
    kept = result.manifest[result.manifest["patient_id"].isin(["cohen:178", "cohen:97"])]
    assert set(kept["split_group"]) == set(linked["split_group"]) and kept["split"].nunique() == 1
    assert (result.report["fate"] == "duplicate").sum() >= 40


def test_linked_patients_lists_every_group_of_several_ids_including_links_made_by_dropped_copies(result) -> None:
    linked = result.linked_patients()
    assert linked.loc["cohen:178", "patient ids"] == "cohen:178, cohen:97"  # patient 97's copies were all dropped
    assert linked.loc["figure1:COVID-00020", "sources"] == "figure1, kaggle"  # the mislabelled copy links two sources
    kept = result.manifest.groupby("split_group")["patient_id"].nunique()
    assert set(kept[kept > 1].index) <= set(linked.index)  # what the manifest alone shows is a part of it
    assert len(linked) > (kept > 1).sum()


def test_no_two_kept_images_are_still_duplicates(curated_data_dir: Path, result) -> None:
    feats = curation.image_features(result.manifest["path"], curated_data_dir, progress=False)
    assert curation.find_duplicate_pairs(feats, CurationConfig()).empty


# ------------------------------------------------------------------ the split itself


def test_split_is_stable_for_the_same_seed_and_row_order(result) -> None:
    kept = result.manifest.drop(columns="split")
    first = assign_splits(kept, CurationConfig(seed=7))
    shuffled = kept.sample(frac=1.0, random_state=1)
    second = assign_splits(shuffled, CurationConfig(seed=7)).reindex(first.index)
    assert first.equals(second)
    other = assign_splits(kept, CurationConfig(seed=8))
    assert not first.equals(other)  # the seed matters
    # the Kaggle test images stay in test whatever the seed
    kaggle_test = kept["kaggle_split"].isin(["test", "val"])
    assert (other[kaggle_test] == "test").all()


def test_curating_again_reproduces_the_manifest_and_refuses_silent_changes(curated_data_dir: Path) -> None:
    again = curate(curated_data_dir, progress=False)
    assert again.status.startswith("unchanged")
    with pytest.raises(CurationChangedError, match="--force"):
        curate(curated_data_dir, progress=False, config=CurationConfig(seed=99))
    assert curation.load_result(curated_data_dir).status == "read from disk"


# ------------------------------------------------------------------ bad input on small real copies


def _copy_source(mirror: Path, root: Path, folder: str) -> Path:
    dest = paths.raw_dir(root) / folder
    shutil.copytree(mirror / folder, dest, copy_function=shutil.copyfile)
    return dest


def test_truncated_image_is_skipped_and_listed_and_the_run_finishes(tmp_path: Path, mirror: Path) -> None:
    src = _copy_source(mirror, tmp_path, "Figure1-COVID-chestxray-dataset")
    victim = src / "images/COVID-00008.jpg"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    res = curate(tmp_path, progress=False, sources=("figure1",))
    skipped = res.skipped()
    assert list(skipped["path"]) == ["raw/Figure1-COVID-chestxray-dataset/images/COVID-00008.jpg"]
    assert "truncated" in skipped["detail"].iloc[0]
    assert "1 unreadable image(s) skipped" in res.summary()
    report = pd.read_csv(paths.curated_dir(tmp_path) / "curation_report.csv")
    assert (report["fate"] == "unreadable").sum() == 1
    assert len(res.manifest) > 20


def test_metadata_file_name_escaping_the_source_folder_is_refused(tmp_path: Path, mirror: Path,
                                                                    monkeypatch) -> None:
    src = _copy_source(mirror, tmp_path, "Actualmed-COVID-chestxray-dataset")
    secret = tmp_path / "secret.png"
    shutil.copyfile(mirror / "chest_xray/test/NORMAL/IM-0001-0001.jpeg", secret)
    meta = (src / "metadata.csv").read_text().splitlines()
    header, first = meta[0], meta[1].split(",")
    col = header.split(",").index("imagename")
    evil = [first[:col] + ["../../secret.png"] + first[col + 1:],
            first[:col] + [str(secret)] + first[col + 1:]]
    (src / "metadata.csv").write_text("\n".join([header, *[",".join(r) for r in evil], *meta[2:]]) + "\n")

    opened: list[str] = []
    for name in ("read_image", "image_info"):
        real = getattr(curation, name)
        monkeypatch.setattr(curation, name, lambda p, _real=real, **kw: opened.append(str(p)) or _real(p, **kw))
    res = curate(tmp_path, progress=False, sources=("actualmed",))
    refused = res.report[res.report["fate"] == "unsafe_name"]
    assert len(refused) == 2
    assert refused["detail"].str.contains("refused file name").all()
    assert not any("secret" in p for p in opened)


def test_symlink_leading_outside_the_source_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "src"
    base.mkdir()
    (base / "link").symlink_to(tmp_path)
    with pytest.raises(paths.UnsafePathError, match="symbolic link"):
        paths.safe_join(base, "link/x.png")
    assert paths.safe_join(base, "images/x.png") == base / "images" / "x.png"


def test_missing_source_names_it_and_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(MissingSourceError, match=r"cohen.*cxr-data fetch --source cohen"):
        curate(tmp_path, progress=False)


def test_image_features_cache_is_reused_and_corrupt_cache_rebuilt(tmp_path: Path, mirror: Path) -> None:
    _copy_source(mirror, tmp_path, "Figure1-COVID-chestxray-dataset")
    first = curate(tmp_path, progress=False, sources=("figure1",))
    cache = paths.curated_dir(tmp_path) / ".image_features.pkl"
    cache.write_bytes(b"garbage")
    (paths.manifest_path(tmp_path)).unlink()
    second = curate(tmp_path, progress=False, sources=("figure1",))
    assert second.manifest.equals(first.manifest)
    assert cache.stat().st_size > 1000
    assert np.isfinite(second.manifest["width"].astype(float)).all()


def test_registry_records_the_encoding_each_metadata_file_really_has(mirror: Path) -> None:
    from cxr_utils.sources import SOURCES

    for key in ("cohen", "figure1", "actualmed"):
        src = SOURCES[key]
        _, found = metadata.read_metadata_csv(mirror / src.folder / src.metadata_file)
        assert found == src.metadata_encoding, key


def test_nul_byte_in_a_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(paths.UnsafePathError, match="NUL"):
        paths.safe_join(tmp_path, "images/x\x00.png")
