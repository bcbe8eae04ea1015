"""Decoding any image file the sources contain into a clean 8-bit array.

The public sources are messy: PNG data in files named ``.jpg``, RGBA and palette PNGs, greyscale
stored as RGB, the odd 16-bit image, and (after an interrupted download) truncated files. Every
lesson reads pixels through :func:`read_image`, so each of those cases is handled once, here:

- the format is taken from the file's *content*, never from its extension;
- palette images are expanded; an alpha channel is composited onto black (an X-ray's background);
- 16-bit and floating-point images are windowed to their own minimum..maximum, then scaled to
  0..255 (a plain ``convert("L")`` would clip them to white);
- EXIF orientation is applied, so the array looks like the picture a viewer shows;
- images above :data:`MAX_PIXELS` are refused before their pixels are decoded, so an absurdly
  large (or malicious) file cannot exhaust memory;
- DICOM files (recognised by their ``DICM`` marker, whatever their name) are read with pydicom: the
  modality LUT (rescale slope and intercept) and the VOI LUT or window are applied as a viewer would,
  MONOCHROME1 (white is low) is inverted, and the result is scaled to 0..255; a multi-frame file or
  one without pixel data is refused (:func:`dicom_pixels`).

Failures raise :class:`ImageError` naming the file and the reason.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 80_000_000
"""Largest image accepted (width x height). The biggest real radiograph in the sources is ~20 MP."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""File name endings treated as images when a source folder is listed."""

DICOM_SUFFIXES = (".dcm", ".dicom")
"""File name endings of DICOM files (a DICOM file is recognised by its content, :func:`is_dicom`, whatever its name)."""


class ImageError(Exception):
    """An image file could not be decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"Image '{self.path}' could not be decoded: {reason}")


@dataclass(frozen=True)
class ImageInfo:
    """What the file header says: the real format (from content), mode and size in pixels."""

    format: str
    mode: str
    width: int
    height: int


def _open_checked(path: Path) -> Image.Image:
    """Open ``path`` lazily (header only) and refuse non-images and oversized images."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image (unknown or corrupt header)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = f"above the limit of {MAX_PIXELS:,} pixels, too large to decode safely ({exc})"
        raise ImageError(path, reason) from None
    except OSError as exc:
        raise ImageError(path, f"unreadable ({exc})") from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise ImageError(
            path,
            f"{width}x{height} pixels is above the limit of {MAX_PIXELS:,}; "
            "downscale it first or raise cxr_utils.images.MAX_PIXELS",
        )
    return img


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a DICOM Part 10 file: ``DICM`` after its 128-byte preamble (whatever its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def dicom_pixels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a single-frame DICOM image as a radiologist's viewer would show it: ``uint8`` ``(H, W)``.

    The stored values go through the modality LUT (``RescaleSlope``, ``RescaleIntercept``), then the VOI
    LUT or the first window (``WindowCenter``/``WindowWidth``) when the file has one; MONOCHROME1 images
    (where a low value is white) are inverted; the result is scaled from its minimum..maximum to 0..255.
    A colour DICOM is made grey (luminance).

    Raises:
        ImageError: pydicom is missing, the file is not a readable DICOM, has no pixel data, holds more
            than one frame, is larger than :data:`MAX_PIXELS`, or its pixel data cannot be decoded.
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise ImageError(path, "a DICOM file; reading it needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(path)
    except (pydicom.errors.InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageError(path, f"not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise ImageError(path, "a DICOM file without pixel data (a report or structured document, not an image)")
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(path, f"a multi-frame DICOM ({frames} frames); save the one frame to read as its own file")
    if int(ds.Rows) * int(ds.Columns) > MAX_PIXELS:
        raise ImageError(path, f"{ds.Columns}x{ds.Rows} pixels is above the limit of {MAX_PIXELS:,}")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds for damaged or compressed pixel data
        raise ImageError(path, f"its pixel data cannot be decoded ({exc}); a compressed DICOM may need an extra "
                               "decoder (pip install pylibjpeg pylibjpeg-libjpeg)") from None
    if stored.ndim == 3:  # colour: luminance, as a grey X-ray
        stored = stored[..., :3] @ np.array([0.299, 0.587, 0.114])
        values = stored.astype(np.float64)
    else:
        values = apply_voi_lut(apply_modality_lut(stored, ds), ds).astype(np.float64)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = values.max() + values.min() - values
    lo, hi = float(values.min()), float(values.max())
    scaled = np.zeros_like(values) if hi <= lo else (values - lo) * (255.0 / (hi - lo))
    return np.round(scaled).astype(np.uint8)


def image_info(path: str | os.PathLike[str]) -> ImageInfo:
    """Read only the header of ``path`` and return its real format, mode and size."""
    with _open_checked(Path(path)) as img:
        return ImageInfo(format=img.format or "?", mode=img.mode, width=img.width, height=img.height)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Return ``img`` as an 8-bit ``L`` or ``RGB`` image (see the module docstring for the rules)."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...


def read_image(
    path: str | os.PathLike[str],
    channels: int = 1,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode ``path`` into a ``uint8`` array, whatever its format, mode or extension.

    Args:
        path: an image file; its format is detected from the content.
        channels: 1 for greyscale ``(H, W)``, 3 for RGB ``(H, W, 3)``.
        size: optional ``(width, height)`` to resize to (bilinear, aspect ratio not kept, as the
            paper's ``tf.image.resize`` did). JPEGs are then decoded at reduced scale, which is
            faster and lighter on memory.

    Returns:
        A ``uint8`` array with values 0..255.

    Raises:
        ImageError: the file is missing, not an image, truncated or corrupt, or too large.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(path)
    if is_dicom(path):
        img = Image.fromarray(dicom_pixels(path), mode="L")
        img = img.convert("L" if channels == 1 else "RGB")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).copy()
    img = _open_checked(path)
    try:
        if size is not None and img.format == "JPEG":
            img.draft("L" if channels == 1 else "RGB", size)
        img.load()
        img = ImageOps.exif_transpose(img)
        img = _to_8bit(img).convert("L" if channels == 1 else "RGB")
        if size is not None and img.size != tuple(size):
            img = img.resize(tuple(size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8).copy()
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated file ({reason})"
        raise ImageError(path, reason) from None
    finally:
        img.close()


def is_image_name(name: str) -> bool:
    """Return True when ``name`` ends in one of :data:`IMAGE_SUFFIXES` (case-insensitive)."""
    return name.lower().endswith(IMAGE_SUFFIXES)
