"""Reading images and masks with clear, file-naming errors."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..defaults import MAX_PIXELS


class DataError(ValueError):
    """A problem with one input file; the message starts with the file's path."""


class NoSamplesError(DataError):
    """Nothing readable was left; ``skipped`` holds why each file was skipped, so the command
    can list the reasons before its one-line error."""

    def __init__(self, message: str, skipped: list[str]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


def image_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels; None when PIL cannot
    identify the data (the decoder then reports it as unreadable)."""
    from PIL import Image, UnidentifiedImageError

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        # PIL's own bomb guard would raise/warn here for huge sizes; we want the size itself
        # and apply our limit, so the guard's error is read for its pixel count instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(src) as img:
                return img.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        return (int(found.group(1)), 1) if found else (2**31, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def check_pixels(source: str | Path | bytes, max_pixels: int = MAX_PIXELS, what: str | None = None) -> None:
    """Raise :class:`DataError` (message starts with the file, or ``what`` for bytes) when the
    image's header declares more than ``max_pixels`` pixels; reads only the header."""
    size = image_size(source)
    if size is None or max_pixels <= 0:
        return
    w, h = size
    if w * h > max_pixels:
        name = what or ("image" if isinstance(source, (bytes, bytearray)) else str(source))
        dims = f"{w}x{h} = {w * h}" if h > 1 else f"{w}"
        raise DataError(f"{name}: image is {dims} pixels, over the limit of {max_pixels} (--max-pixels)")


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); grayscale/RGBA/16-bit are converted.
    Images over ``max_pixels`` are refused from their header (:func:`check_pixels`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    check_pixels(path, max_pixels)
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_gray(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a single-channel 8-bit mask/alpha/ignore map (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    check_pixels(path, max_pixels)
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable mask image (corrupt or unsupported format)")
    return img


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes via a temporary file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    except BaseException:
        # Disk full, Ctrl-C, SIGTERM (raised as SystemExit by the commands): no half file left.
        tmp.unlink(missing_ok=True)
        raise
    return path


def temp_path(path: str | Path) -> Path:
    """The hidden temporary ``.NAME.tmp`` beside ``path`` that atomic writes go through."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def is_temp_file(path: str | Path) -> bool:
    name = Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete ``.X.tmp`` files a killed run (``kill -9``, power loss) left under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def encode_image(img: np.ndarray, suffix: str, quality: int = 95) -> bytes:
    """Encode RGB(A) or gray uint8 to the format implied by ``suffix`` (.png/.jpg/.webp)."""
    suffix = suffix.lower()
    arr = img
    if img.ndim == 3 and img.shape[2] == 3:
        arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        arr = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(suffix, arr, params)
    if not ok:
        raise DataError(f"cannot encode image as {suffix}")
    return buf.tobytes()
