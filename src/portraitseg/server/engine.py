"""Request parsing, encoding and the engine: one :class:`~portraitseg.pipeline.Pipeline` per
worker thread over the shared model."""

from __future__ import annotations

import io
import re
import threading
import time
import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..data.io import IMAGE_FORMATS
from ..inference import load_image
from ..pipeline import Pipeline
from ..runtimes import DEFAULT_ONNX, DEFAULT_TFLITE, Runtime
from .config import ServerConfig

# Formats PIL may open: the allow-list every image reader shares (data.io), so exotic decoders
# (EPS, PSD, ...) with a larger attack surface are never reached from the network.
ALLOWED_FORMATS = IMAGE_FORMATS
HEX_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6})$")
PNG_LEVEL = 1  # masks compress well already; level 1 is ~3x faster than the default 3
JPEG_QUALITY = 90

class Output(str, Enum):
    mask = "mask"
    cutout = "cutout"
    composite = "composite"


class Format(str, Enum):
    png = "png"
    jpeg = "jpeg"


class ApiError(Exception):
    """A client-visible failure: HTTP status + one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- request parsing


def parse_colour(text: str) -> tuple[int, int, int] | str:
    """``blur``, ``#rrggbb``/``rrggbb`` or a CSS colour name -> composite background.

    Deliberately not :func:`portraitseg.inference.parse_background`: that also accepts file
    paths, which must never be reachable from a request.
    """
    if text == "blur":
        return "blur"
    m = HEX_COLOUR.match(text)
    if m:
        v = int(m.group(1), 16)
        return (v >> 16 & 255, v >> 8 & 255, v & 255)
    from PIL import ImageColor

    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise ApiError(400, f"background {text!r} is not 'blur', '#rrggbb' or a colour name") from None


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
    decodes to gigabytes from a file of kilobytes). The CLI's equivalent is in ``data.io``;
    kept separate and small so the two can be unified."""
    w, h = size
    if w * h > max_pixels:
        raise ApiError(413, f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Bytes -> RGB uint8, refusing oversized images from the header before decoding pixels."""
    img = open_header(data, what)
    check_pixels(img.size, max_pixels, what)
    try:
        img.load()  # the full decode: truncated/corrupt data fails here
        return load_image(img)
    except Exception as exc:  # a decoder failure on client bytes is a 400
        raise ApiError(400, f"{what} is not a readable image ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "unknown or corrupt format"
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return text or type(exc).__name__


def encode(img: np.ndarray, fmt: Format) -> tuple[bytes, str]:
    """RGB/RGBA/gray uint8 -> (bytes, media type)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if fmt is Format.png:
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
        media = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        media = "image/jpeg"
    if not ok:
        raise ApiError(500, f"could not encode the result as {fmt.value}")
    return buf.tobytes(), media


# --------------------------------------------------------------------------- engine


@dataclass
class SegmentRequest:
    image: bytes
    output: Output
    fmt: Format
    background: tuple[int, int, int] | str | None = None
    background_image: bytes | None = None


@dataclass
class SegmentResult:
    body: bytes
    media_type: str
    size: tuple[int, int]  # (width, height)
    timings_ms: dict[str, float]


class Engine:
    """The shared model + one pipeline per worker thread; ``run`` is called from worker threads."""

    def __init__(self, runtime: Runtime, cfg: ServerConfig) -> None:
        self.runtime = runtime
        self.cfg = cfg
        self._local = threading.local()

    def pipeline(self) -> Pipeline:
        """This thread's pipeline (created on its first request)."""
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:
            pipe = self._local.pipe = Pipeline(self.runtime.for_thread(), self.cfg.postprocess)
        return pipe

    def run(self, req: SegmentRequest) -> SegmentResult:
        t: dict[str, float] = {}
        pipe = self.pipeline()
        t0 = time.perf_counter()
        rgb = decode_image(req.image, self.cfg.max_pixels)
        t1 = time.perf_counter()
        prob = pipe.model_prob(rgb)
        t2 = time.perf_counter()
        alpha = pipe.alpha(prob, rgb)
        result = self._render(req, rgb, alpha, pipe)
        t3 = time.perf_counter()
        body, media = encode(result, req.fmt)
        t4 = time.perf_counter()
        t = {"decode": t1 - t0, "infer": t2 - t1, "post": t3 - t2, "encode": t4 - t3}
        h, w = rgb.shape[:2]
        return SegmentResult(body, media, (w, h), {k: v * 1000.0 for k, v in t.items()})

    def _render(self, req: SegmentRequest, rgb: np.ndarray, alpha: np.ndarray, pipe: Pipeline) -> np.ndarray:
        if req.output is not Output.composite:
            return pipe.render(rgb, alpha, req.output.value)
        if req.background_image is not None:
            background: Any = decode_image(req.background_image, self.cfg.max_pixels, "background_image")
        else:
            background = req.background or "blur"
        return pipe.render(rgb, alpha, "composite", background)


def set_pil_limits(max_pixels: int) -> None:
    """PIL's own bomb guard is process-wide, so only the server process sets it (``serve``);
    decode_image's header check enforces the exact limit either way."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we answer 413 ourselves
    # Corrupt uploads make PIL's TIFF/EXIF readers warn ("Tag data larger than file"): the
    # client gets its 400 or a decoded image; the log is not the place for it.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def model_file(runtime: Runtime) -> Path | None:
    """The ONNX file served to the browser: the runtime's own, or for the bundled model on
    LiteRT the bundled ONNX (the same weights); None when there is no ONNX file."""
    path = getattr(runtime, "path", None)
    if path is not None and Path(path).suffix == ".onnx":
        return Path(path)
    return DEFAULT_ONNX if path is not None and Path(path) == DEFAULT_TFLITE else None
