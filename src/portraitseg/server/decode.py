"""Uploaded bytes -> RGB, with every limit checked from the header before a pixel is decoded:
format allow-list (400), pixel count and JPEG scan count (413)."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from ..data.io import IMAGE_FORMATS
from ..data.jpeg_scans import MAX_JPEG_SCANS, ScanLimitError, check_jpeg_scans
from ..inference import load_image
from .request import ApiError

# Formats PIL may open: the allow-list every image reader shares (data.io), so exotic decoders
# (EPS, PSD, ...) with a larger attack surface are never reached from the network.
ALLOWED_FORMATS = IMAGE_FORMATS


def open_header(data: bytes, what: str = "image") -> Any:
    """Bytes -> a lazily opened PIL image: only the header is parsed, no pixel is decoded.

    Any failure to parse the header is the client's bad bytes (400), never a server error:
    PIL's format plugins raise OSError, SyntaxError, ValueError, struct.error, EOFError and
    more on corrupt headers.
    """
    from PIL import Image

    if not data:
        raise ApiError(400, f"{what} is empty")
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:  # over 2x PIL's MAX_IMAGE_PIXELS (set by serve)
        raise ApiError(413, f"{what} has too many pixels for this server") from None
    except Exception as exc:  # see the docstring: every parse failure is bad input
        raise ApiError(400, f"{what} is not a readable image ({_reason(exc)})") from None


def check_pixels(size: tuple[int, int], max_pixels: int, what: str = "image") -> None:
    """Refuse an image whose header declares more than ``max_pixels`` (a decompression bomb
    decodes to gigabytes from a file of kilobytes)."""
    w, h = size
    if w * h > max_pixels:
        raise ApiError(413, f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")


def open_checked(data: bytes, max_pixels: int, what: str = "image", max_scans: int = MAX_JPEG_SCANS) -> Any:
    """:func:`open_header` + the pixel limit + the JPEG scan limit (decode work, see
    :mod:`portraitseg.data.jpeg_scans`): everything that bounds the decode, before it starts."""
    img = open_header(data, what)
    check_pixels(img.size, max_pixels, what)
    if img.format == "JPEG":
        try:
            check_jpeg_scans(data, max_scans)
        except ScanLimitError as exc:
            raise ApiError(413, f"{what} is a {exc}") from None
    return img


def decode(img: Any, what: str = "image") -> np.ndarray:
    """The full decode of an image from :func:`open_checked` -> RGB uint8 (a copy: ``img`` is
    closed, so its decoded pixels are freed now, not when the request's objects go)."""
    try:
        img.load()  # truncated/corrupt data fails here
        return load_image(img)
    except Exception as exc:  # a decoder failure on client bytes is a 400
        raise ApiError(400, f"{what} is not a readable image ({_reason(exc)})") from None
    finally:
        img.close()


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Bytes -> RGB uint8, refusing oversized or too costly images before decoding pixels."""
    return decode(open_checked(data, max_pixels, what), what)


def _reason(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "unknown or corrupt format"
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return text or type(exc).__name__


def set_pil_limits(max_pixels: int) -> None:
    """PIL's own bomb guard is process-wide, so only the server process sets it (``serve``);
    :func:`check_pixels` enforces the exact limit either way."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we answer 413 ourselves
    # Corrupt uploads make PIL's TIFF/EXIF readers warn ("Tag data larger than file"): the
    # client gets its 400 or a decoded image; the log is not the place for it.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
