"""Reading images and masks with clear, file-naming errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class DataError(ValueError):
    """A problem with one input file; the message starts with the file's path."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); grayscale/RGBA/16-bit are converted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_gray(path: str | Path) -> np.ndarray:
    """Read a single-channel 8-bit mask/alpha/ignore map (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable mask image (corrupt or unsupported format)")
    return img


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes via a temporary file + rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


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
