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
  large (or malicious) file cannot exhaust memory.

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
"""File name endings treated as images when a folder is listed."""


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
