"""DICOM input (cxr_utils.images): a chest X-ray saved as DICOM reads as the picture a viewer shows, whatever its
photometric interpretation, bit depth, rescale and window; what cannot be read is refused naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dicom_files import write_dicom

from cxr_utils import preprocess
from cxr_utils.images import ImageError, is_dicom, read_image


@pytest.fixture(scope="module")
def xray(mirror: Path) -> np.ndarray:
    """A real chest X-ray from the mirror (Kaggle test folder), as 8-bit grey pixels."""
    return read_image(sorted((mirror / "chest_xray" / "test" / "NORMAL").glob("*.jpeg"))[0], channels=1)


def stretched(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` scaled from their minimum..maximum to 0..255, as a DICOM is shown."""
    v = pixels.astype(np.float64)
    return np.round((v - v.min()) * 255.0 / (v.max() - v.min())).astype(np.uint8)


def test_a_monochrome2_dicom_reads_as_its_picture(tmp_path, xray):
    path = write_dicom(tmp_path / "plain.dcm", xray)
    assert is_dicom(path)
    np.testing.assert_array_equal(read_image(path), stretched(xray))


def test_a_monochrome1_dicom_is_inverted_back(tmp_path, xray):
    path = write_dicom(tmp_path / "inverted", 255 - xray, photometric="MONOCHROME1")  # no extension: found by content
    np.testing.assert_array_equal(read_image(path), stretched(xray))


def test_a_12_bit_dicom_goes_through_its_rescale_and_window(tmp_path, xray):
    stored = xray.astype(np.uint16) * 16  # 0..4080 in 12 bits
    full = write_dicom(tmp_path / "full.dcm", stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                       WindowCenter=1016, WindowWidth=4096)  # a window over the whole range: the picture itself
    np.testing.assert_allclose(read_image(full).astype(int), stretched(xray).astype(int), atol=1)
    narrow = write_dicom(tmp_path / "narrow.dcm", stored, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024,
                         WindowCenter=1016, WindowWidth=1024)  # half the grey levels: the rest saturate
    got = read_image(narrow).astype(int)
    modality = stored.astype(int) - 1024
    assert (got[modality <= 1016 - 512] == 0).all() and (got[modality >= 1016 + 512] == 255).all()
    middle = (modality > 600) & (modality < 1400)
    assert np.corrcoef(got[middle], modality[middle])[0, 1] > 0.99  # linear inside the window


def test_a_dicom_becomes_model_input_like_any_other_file(tmp_path, xray):
    path = write_dicom(tmp_path / "plain.dcm", xray)
    x = preprocess.model_input([path], 64, 3)
    assert x.shape == (1, 64, 64, 3) and x.dtype == np.float32 and x.max() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("kind", "message"), [("multi-frame", "multi-frame DICOM \\(2 frames\\)"),
                                                ("no pixels", "without pixel data"),
                                                ("truncated", "not a readable DICOM|cannot be decoded")])
def test_a_dicom_that_cannot_be_one_picture_is_refused_naming_it(tmp_path, xray, kind, message):
    path = tmp_path / f"{kind.replace(' ', '-')}.dcm"
    if kind == "multi-frame":
        write_dicom(path, np.stack([xray, xray]), frames=2)
    elif kind == "no pixels":
        write_dicom(path, xray, with_pixels=False)
    else:
        write_dicom(path, xray)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ImageError, match=rf"{path.name}.*({message})"):
        read_image(path)


def test_a_file_named_dcm_that_is_not_dicom_is_refused_as_not_an_image(tmp_path):
    fake = tmp_path / "scan.dcm"
    fake.write_text("not a DICOM file\n")
    assert not is_dicom(fake)
    with pytest.raises(ImageError, match="scan.dcm.*not an image"):
        read_image(fake)
