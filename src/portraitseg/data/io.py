"""Reading images and masks with clear, file-naming errors."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from ..defaults import MAX_PIXELS


class DataError(ValueError):
    """A problem with one input file; the message starts with the file's path."""


def one_line(text: str) -> str:
    """``text`` with its control characters escaped (``\\n`` for a newline): a file name may
    hold any of them, and a 'path: problem' line must stay one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text)


class NoSamplesError(DataError):
    """Nothing readable was left; ``skipped`` holds why each file was skipped, so the command
    can list the reasons before its one-line error."""

    def __init__(self, message: str, skipped: list[str]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)


# The image formats every reader opens (PIL's names), the server's uploads included: common
# photo formats only. PIL otherwise picks its decoder from the bytes, not the name, so a
# "photo.jpg" holding EPS would reach Ghostscript (and PSD, FITS, ... other rarely used decoders):
# a large attack surface for files and uploads from anywhere.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF or TIFF"


def _source(source: str | Path | bytes) -> str | Path | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source


def image_size(source: str | Path | bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels; None when the data is
    not an image of :data:`IMAGE_FORMATS` (the reader then reports it as unreadable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_header(_source(source)) as img:
            return img.size
    except Image.DecompressionBombError as exc:
        return _bomb_size(exc)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _open_header(source: str | Path | io.BytesIO):
    """``Image.open`` restricted to :data:`IMAGE_FORMATS`, PIL's bomb warning silenced: we want
    the size itself and apply our own limit (:func:`_refuse_size`)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source, formats=IMAGE_FORMATS)


def _bomb_size(exc: Exception) -> tuple[int, int]:
    """The pixel count in PIL's DecompressionBombError (raised before the size is readable),
    as a (pixels, 1) size."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return (int(found.group(1)), 1) if found else (2**31, 1)


def _refuse_size(name: str, size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if max_pixels > 0 and w * h > max_pixels:
        dims = f"{w}x{h} = {w * h}" if h > 1 else f"{w}"
        raise DataError(f"{name}: image is {dims} pixels, over the limit of {max_pixels} (--max-pixels)")


def check_pixels(source: str | Path | bytes, max_pixels: int = MAX_PIXELS, what: str | None = None) -> None:
    """Raise :class:`DataError` (message starts with the file, or ``what`` for bytes) when the
    image's header declares more than ``max_pixels`` pixels; reads only the header."""
    size = image_size(source)
    if size is not None:
        _refuse_size(what or ("image" if isinstance(source, (bytes, bytearray)) else str(source)),
                     size, max_pixels)


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS):
    """The one way files are opened as images: a lazily opened ``PIL.Image`` (header parsed,
    no pixel decoded yet) of one of :data:`IMAGE_FORMATS`, not over ``max_pixels``.

    Raises :class:`DataError` starting with the path for a missing file, another format (by
    content, whatever the name says), a corrupt header or too many pixels. Use it as a context
    manager; errors of the decode itself (``img.load()``) are the caller's (:func:`decode_error`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = _open_header(path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format; "
                        f"{FORMATS_TEXT} are read)") from None
    except Image.DecompressionBombError as exc:
        _refuse_size(str(path), _bomb_size(exc), max_pixels)
        raise DataError(f"{path}: too many pixels ({exc})") from None  # a --max-pixels above PIL's guard
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, ... on bad headers
        raise decode_error(path, exc) from None
    try:
        _refuse_size(str(path), img.size, max_pixels)  # from the header, before decoding
        if img.format == "JPEG":
            # A small progressive JPEG with thousands of scans decodes for a minute (each scan is a
            # pass over the whole image): refuse it from its bytes, as the server does.
            _refuse_scan_bomb(path)
    except DataError:
        img.close()
        raise
    return img


def _refuse_scan_bomb(path: Path) -> None:
    from .jpeg_scans import ScanLimitError, check_jpeg_scans

    try:
        check_jpeg_scans(path)
    except ScanLimitError as exc:
        raise DataError(f"{path}: {exc}") from None


def decode_error(path: str | Path, exc: BaseException) -> DataError:
    """A decoder's exception on ``path`` as the one-line :class:`DataError`."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"{path}: not a readable image ({reason})")


def _decode(path: str | Path, flags: int, max_pixels: int, what: str) -> np.ndarray:
    """OpenCV decode (faster than PIL for datasets) of a file that :func:`open_image` accepts:
    the same format allow-list and pixel limit as every other reader."""
    with open_image(path, max_pixels):
        pass
    buf = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise DataError(f"{path}: not a readable {what} (corrupt or unsupported format)")
    return img


def read_rgb(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); grayscale/RGBA/16-bit are converted.
    Only :data:`IMAGE_FORMATS`; images over ``max_pixels`` are refused from their header."""
    img = _decode(path, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH, max_pixels, "image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_gray(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a single-channel 8-bit mask/alpha/ignore map (H, W) (formats as :func:`read_rgb`)."""
    return _decode(path, cv2.IMREAD_GRAYSCALE, max_pixels, "mask image")


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
        # On a read-only file system the unlink fails too; the write's own error is the one to show.
        with contextlib.suppress(OSError):
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


# The encoders' own limits on a side (px): libjpeg's JPEG_MAX_DIMENSION, WebP's 14-bit sizes,
# libpng's default user limit (which OpenCV keeps). Past them OpenCV fails with a multi-line log
# and no reason, so they are checked first.
ENCODER_MAX_SIDE = {".jpg": 65_500, ".jpeg": 65_500, ".webp": 16_383, ".png": 1_000_000}


def encode_image(img: np.ndarray, suffix: str, quality: int = 95, what: str = "image") -> bytes:
    """Encode RGB(A) or gray uint8 to the format implied by ``suffix`` (.png/.jpg/.webp); an
    image the format cannot hold raises :class:`DataError` saying why, naming it ``what`` (a
    kind of output: the caller adds the input file)."""
    suffix = suffix.lower()
    limit = ENCODER_MAX_SIDE.get(suffix)
    if limit is not None and max(img.shape[:2]) > limit:
        h, w = img.shape[:2]
        raise DataError(f"cannot write the {what} as {suffix}: it is {w}x{h} pixels and the format "
                        f"holds at most {limit} a side")
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
