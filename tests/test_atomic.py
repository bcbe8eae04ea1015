"""cxr_utils.atomic: a file is replaced whole or not at all, and no temporary file is left behind."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxr_utils import atomic


def test_a_completed_block_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic.replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".csv"
        tmp.write_text("a,b\n1,2\n")
        assert not target.exists()  # nothing under the final name until the block ends
    assert target.read_text() == "a,b\n1,2\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failure_inside_the_block_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, failure):
    target = tmp_path / "manifest.csv"
    target.write_text("old\n")
    with pytest.raises(type(failure)), atomic.replacing(target) as tmp:
        tmp.write_text("half a fi")
        raise failure
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.csv"]


def test_writers_that_insist_on_an_extension_get_one(tmp_path):
    target = tmp_path / "cache.npz"
    with atomic.replacing(target) as tmp:
        np.savez(tmp, x=np.arange(3))  # np.savez adds .npz to a name that lacks it
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_a_fixed_suffix_names_the_temporary_file_as_documented(tmp_path):
    assert atomic.temporary_name(tmp_path / "image.png", ".part") == tmp_path / "image.png.part"
    with atomic.replacing(tmp_path / "image.png", suffix=".part") as tmp:
        assert tmp.name == "image.png.part"
        tmp.write_bytes(b"png")
    assert (tmp_path / "image.png").read_bytes() == b"png"


def test_json_and_csv_writers_round_trip_numpy_values(tmp_path):
    atomic.write_json(tmp_path / "m.json", {"n": np.int64(3), "acc": np.float32(0.5), "cm": np.eye(2, dtype=int)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"n": 3, "acc": 0.5, "cm": [[1, 0], [0, 1]]}
    assert (tmp_path / "m.json").read_text().endswith("}\n")
    frame = pd.DataFrame({"p": [1 / 3, 0.25]})
    atomic.write_csv(tmp_path / "p.csv", frame, float_format="%.6g")
    assert (tmp_path / "p.csv").read_text() == "p\n0.333333\n0.25\n"
