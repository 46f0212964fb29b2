"""The engine: one :class:`~portraitseg.pipeline.Pipeline` per worker thread over the shared
model, with every request's work bounded before it starts and stopped once it has timed out.

A request goes: headers of its images (pixel and JPEG scan limits, encoder limits: 413 before
any work) -> room in the shared pixel budget (waits until its deadline, then 503) -> decode ->
model -> post-processing -> encode, checking its deadline between stages so a request whose
client already got its 504 stops instead of finishing for nobody. After an image larger than
:data:`KEEP_BUFFERS_PIXELS` the thread's post-processing buffers are dropped and freed memory is
given back to the OS: buffers keep the size of the largest image a thread has seen, so eight
25 MP requests otherwise left the server at 2 GB for good.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import postprocess as pp
from ..memory import release_freed_memory
from ..pipeline import Pipeline
from ..runtimes import DEFAULT_ONNX, DEFAULT_TFLITE, Runtime
from .budget import Budget
from .config import ServerConfig
from .decode import decode, open_checked
from .request import ApiError, Format, Output, SegmentRequest, check_encodable

PNG_LEVEL = 1  # masks compress well already; level 1 is ~3x faster than the default 3
JPEG_QUALITY = 90
# Post-processing buffers are kept between requests up to this size (1080p and below: the web
# app's and most API frames), where reusing them saves page faults per request; above it they
# would cost ~35 bytes per pixel per thread for good, so they are dropped after the request.
KEEP_BUFFERS_PIXELS = 1920 * 1088


def encode(img: np.ndarray, fmt: Format) -> tuple[bytes, str]:
    """RGB/RGBA/gray uint8 -> (bytes, media type)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR if img.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    if fmt is Format.png:
        ext, params, media = ".png", [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL], "image/png"
    else:
        ext, params, media = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY], "image/jpeg"
    try:
        ok, buf = cv2.imencode(ext, img, params)
    except cv2.error:
        ok = False
    if not ok:  # check_encodable refuses what the encoders cannot take; this is a bug
        raise ApiError(500, f"could not encode the result as {fmt.value}")
    return buf.tobytes(), media


@dataclass
class Prepared:
    """A request's images with every header limit checked (:meth:`Engine.prepare`), no pixel
    decoded yet; ``pixels`` is what they will cost in the pixel budget."""

    image: Any  # lazily opened PIL images
    background: Any | None
    pixels: int


@dataclass
class SegmentResult:
    body: bytes
    media_type: str
    size: tuple[int, int]  # (width, height)
    timings_ms: dict[str, float]


class Engine:
    """The shared model + one pipeline per worker thread; ``run`` is called from worker threads.
    ``pixels`` is the budget of image pixels in flight over all threads."""

    def __init__(self, runtime: Runtime, cfg: ServerConfig, pixels: Budget | None = None) -> None:
        self.runtime = runtime
        self.cfg = cfg
        self.pixels = pixels or Budget(cfg.max_inflight_pixels)
        self._local = threading.local()

    def pipeline(self) -> Pipeline:
        """This thread's pipeline (created on its first request)."""
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:
            pipe = self._local.pipe = Pipeline(self.runtime.for_thread(), self.cfg.postprocess)
        return pipe

    def prepare(self, req: SegmentRequest) -> Prepared:
        """Every limit that can be read from the images' headers (pixels, JPEG scans, encoder
        sides): the app calls this before queueing, so a refused request never takes a worker."""
        image = open_checked(req.image, self.cfg.max_pixels)
        check_encodable(image.size, req.fmt)
        background = None
        if req.output is Output.composite and req.background_image is not None:
            background = open_checked(req.background_image, self.cfg.max_pixels, "background_image")
        pixels = _pixels(image) + (_pixels(background) if background is not None else 0)
        return Prepared(image, background, pixels)

    def run(self, req: SegmentRequest, prepared: Prepared | None = None) -> SegmentResult:
        req.check_deadline()  # queued past its timeout: the client already has its 504
        prepared = prepared or self.prepare(req)
        held = self.pixels.clamp(prepared.pixels)
        if not self.pixels.acquire(held, req.deadline - time.monotonic()):
            raise ApiError(503, "server busy: images in progress fill the server's pixel budget; retry later",
                           {"retry-after": str(self.cfg.retry_after_s)})
        try:
            return self._run(req, prepared.image, prepared.background)
        finally:
            self.pixels.release(held)
            if prepared.pixels > KEEP_BUFFERS_PIXELS:
                self._give_back_memory()

    def _run(self, req: SegmentRequest, image: Any, background: Any) -> SegmentResult:
        pipe = self.pipeline()
        t0 = time.perf_counter()
        rgb = decode(image)
        t1 = time.perf_counter()
        req.check_deadline()
        prob = pipe.model_prob(rgb)
        t2 = time.perf_counter()
        req.check_deadline()
        alpha = pipe.alpha(prob, rgb)
        if req.output is not Output.composite:
            result = pipe.render(rgb, alpha, req.output.value)
        else:
            bg = req.background or "blur" if background is None else decode(background, "background_image")
            req.check_deadline()
            result = pipe.render(rgb, alpha, "composite", bg)
        t3 = time.perf_counter()
        req.check_deadline()
        body, media = encode(result, req.fmt)
        t4 = time.perf_counter()
        t = {"decode": t1 - t0, "infer": t2 - t1, "post": t3 - t2, "encode": t4 - t3}
        h, w = rgb.shape[:2]
        return SegmentResult(body, media, (w, h), {k: v * 1000.0 for k, v in t.items()})

    def _give_back_memory(self) -> None:
        """Drop this thread's post-processing buffers (sized for the large image just done) and
        return the freed memory to the OS (the CLI's allocator tuning keeps freed memory)."""
        pipe = getattr(self._local, "pipe", None)
        if pipe is not None:
            pipe.postprocessor.ws = pp.Workspace()
        release_freed_memory()


def _pixels(img: Any) -> int:
    w, h = img.size
    return int(w) * int(h)


def model_file(runtime: Runtime) -> Path | None:
    """The ONNX file served to the browser: the runtime's own, or for the bundled model on
    LiteRT the bundled ONNX (the same weights); None when there is no ONNX file."""
    path = getattr(runtime, "path", None)
    if path is not None and Path(path).suffix == ".onnx":
        return Path(path)
    return DEFAULT_ONNX if path is not None and Path(path) == DEFAULT_TFLITE else None

