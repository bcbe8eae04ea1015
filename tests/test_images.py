"""cxr_utils.images: every odd file the sources contain decodes to a clean 8-bit array, or fails clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_utils import images
from cxr_utils.images import ImageError, image_info, read_image

# A real Kaggle radiograph and a real Cohen image stored in colour.
KAGGLE_JPEG = "chest_xray/test/NORMAL/IM-0001-0001.jpeg"


@pytest.fixture()
def real_grey(mirror: Path) -> np.ndarray:
    return np.asarray(Image.open(mirror / KAGGLE_JPEG).convert("L"))


def test_greyscale_jpeg_decodes_to_uint8_with_requested_channels(mirror: Path) -> None:
    grey = read_image(mirror / KAGGLE_JPEG, channels=1)
    rgb = read_image(mirror / KAGGLE_JPEG, channels=3)
    assert grey.dtype == np.uint8 and grey.ndim == 2
    assert rgb.shape == (*grey.shape, 3)
    assert np.array_equal(rgb[..., 0], grey) and np.array_equal(rgb[..., 2], grey)


def test_resize_gives_the_requested_width_and_height(mirror: Path) -> None:
    out = read_image(mirror / KAGGLE_JPEG, channels=3, size=(80, 60))
    assert out.shape == (60, 80, 3)


def test_png_data_in_a_jpg_named_file_is_decoded_by_content(tmp_path: Path, real_grey: np.ndarray) -> None:
    lying = tmp_path / "really_png.jpg"
    Image.fromarray(real_grey).save(lying, format="PNG")
    assert image_info(lying).format == "PNG"
    assert np.array_equal(read_image(lying), real_grey)  # PNG is lossless: exact pixels back


def test_rgba_is_composited_onto_black(tmp_path: Path, real_grey: np.ndarray) -> None:
    rgba = Image.fromarray(real_grey).convert("RGBA")
    alpha = np.full(real_grey.shape, 255, np.uint8)
    alpha[:, : alpha.shape[1] // 2] = 0  # left half fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "x.png")
    out = read_image(tmp_path / "x.png")
    half = real_grey.shape[1] // 2
    assert out[:, :half].max() == 0
    assert np.array_equal(out[:, half:], real_grey[:, half:])


def test_palette_image_is_expanded(tmp_path: Path, real_grey: np.ndarray) -> None:
    Image.fromarray(real_grey).convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = read_image(tmp_path / "p.png")
    assert np.abs(out.astype(int) - real_grey.astype(int)).mean() < 2


def test_sixteen_bit_image_is_windowed_not_clipped(tmp_path: Path, real_grey: np.ndarray) -> None:
    # A 12-bit detector image stored in 16 bits: values up to 4095. convert("L") would clip to white.
    twelve = (real_grey.astype(np.uint16) * 16).astype(np.uint16)
    Image.fromarray(twelve).save(tmp_path / "d.png")  # uint16 -> mode I;16
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = read_image(tmp_path / "d.png")
    lo, hi = real_grey.min(), real_grey.max()
    expected = np.round((real_grey.astype(float) - lo) * 255 / (hi - lo))
    assert np.abs(out - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255


def test_truncated_real_jpeg_raises_an_error_naming_the_file(tmp_path: Path, mirror: Path) -> None:
    data = (mirror / KAGGLE_JPEG).read_bytes()
    bad = tmp_path / "cut.jpeg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.jpeg.*truncated"):
        read_image(bad)


def test_non_image_file_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("patientid,finding\n1,COVID-19\n")
    with pytest.raises(ImageError, match="not an image"):
        read_image(fake)


def test_absurdly_large_image_is_refused_before_decoding(tmp_path: Path, monkeypatch) -> None:
    huge = tmp_path / "huge.png"
    Image.new("L", (12_000, 8_000)).save(huge, optimize=True)  # 96 MP, a small file on disk
    monkeypatch.setattr(images, "MAX_PIXELS", 80_000_000)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the pixels were decoded; the header alone must refuse the image")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match="above the limit"):
        read_image(huge)


def test_missing_file_error_names_it(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="nowhere.png.*not found"):
        read_image(tmp_path / "nowhere.png")


def test_real_colour_image_from_cohen_keeps_three_distinct_channels(mirror: Path, tmp_path: Path) -> None:
    # Find a real RGB image in the Cohen folder (the mirror stores 150 of them in colour).
    for p in sorted((mirror / "covid-chestxray-dataset/images").iterdir()):
        if image_info(p).mode == "RGB":
            shutil.copyfile(p, tmp_path / p.name)
            break
    out = read_image(tmp_path / p.name, channels=3)
    assert out.shape[2] == 3 and not np.array_equal(out[..., 0], out[..., 2])
