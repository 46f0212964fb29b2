"""HTTP API: ``portraitseg serve`` (FastAPI + uvicorn, ``pip install portraitseg[server]``;
importing this module needs fastapi).

Endpoints
---------
``GET /healthz``            liveness + model info and current load.
``POST /v1/segment``        multipart field ``image`` (+ optional ``background_image``);
                            query ``output=mask|cutout|composite``, ``background=blur|#rrggbb|name``,
                            ``format=png|jpeg``. Returns the encoded image.
``GET /model.onnx``         the served ONNX model (for the in-browser web app).
``GET /docs``               OpenAPI UI. ``/`` serves the ``web/`` folder when present.

Hardening: every limit answers JSON ``{"error": "..."}`` with a specific status: body size (413,
checked on Content-Length *and* while streaming), pixel count (413, from the header before the
full decode), wrong content type (415), empty/corrupt image (400), in-flight requests over
``max_concurrency`` (503 + Retry-After, rejected before the body is read), per-request timeout
(504). Nothing in a request is ever used as a path or URL.

The model is loaded once and shared: an onnxruntime session is safe to ``run`` from several
threads, while post-processing buffers are per worker thread (``threading.local``).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import postprocess as pp
from .inference import load_image, open_model
from .runtimes import OnnxRuntime, Runtime, output_to_prob

MB = 1024 * 1024
SEGMENT_PATH = "/v1/segment"
# Formats PIL may open: common photo formats only, so exotic decoders (EPS, PSD, ...) with a
# larger attack surface are never reached from the network.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
HEX_COLOUR = re.compile(r"^#?([0-9a-fA-F]{6})$")
PNG_LEVEL = 1  # masks compress well already; level 1 is ~3x faster than the default 3
JPEG_QUALITY = 90
ISOLATION_HEADERS = [(b"cross-origin-opener-policy", b"same-origin"),
                     (b"cross-origin-embedder-policy", b"require-corp")]


class Output(str, Enum):
    mask = "mask"
    cutout = "cutout"
    composite = "composite"


class Format(str, Enum):
    png = "png"
    jpeg = "jpeg"


@dataclass(frozen=True)
class ServerConfig:
    model: str = "default"
    worker_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    model_threads: int = 1  # intra-op threads per inference; workers give the parallelism
    max_concurrency: int = 32  # requests in flight (queued + running); more -> 503
    max_body_bytes: int = 10 * MB
    max_pixels: int = 25_000_000
    timeout_s: float = 30.0
    retry_after_s: int = 1
    web_dir: Path | None = None
    postprocess: pp.PostprocessConfig = field(default_factory=pp.PostprocessConfig)


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


def decode_image(data: bytes, max_pixels: int, what: str = "image") -> np.ndarray:
    """Bytes -> RGB uint8, refusing oversized images from the header before decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ApiError(400, f"{what} is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise ApiError(413, f"{what} has too many pixels (limit {max_pixels})") from None
    except UnidentifiedImageError:
        raise ApiError(400, f"{what} is not a readable image (unknown or corrupt format)") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ApiError(413, f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    try:
        img.load()  # the full decode: truncated/corrupt data fails here
        return load_image(img)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's decoders raise these on bad data
        raise ApiError(400, f"{what} is not a readable image ({exc})") from None


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
    """The shared model + per-thread post-processing; ``run`` is called from worker threads."""

    def __init__(self, runtime: Runtime, cfg: ServerConfig) -> None:
        self.runtime = runtime
        self.cfg = cfg
        self._local = threading.local()

    def _postprocessor(self) -> pp.Postprocessor:
        proc = getattr(self._local, "proc", None)
        if proc is None:
            proc = self._local.proc = pp.Postprocessor(self.cfg.postprocess)
        return proc

    def run(self, req: SegmentRequest) -> SegmentResult:
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        rgb = decode_image(req.image, self.cfg.max_pixels)
        t1 = time.perf_counter()
        raw = self.runtime.infer(self.runtime.preprocess(rgb))
        prob = output_to_prob(raw, self.runtime.output_format, self.runtime.input_size)
        t2 = time.perf_counter()
        proc = self._postprocessor()
        alpha = proc(prob, rgb)
        result = self._render(req, rgb, alpha, proc)
        t3 = time.perf_counter()
        body, media = encode(result, req.fmt)
        t4 = time.perf_counter()
        t = {"decode": t1 - t0, "infer": t2 - t1, "post": t3 - t2, "encode": t4 - t3}
        h, w = rgb.shape[:2]
        return SegmentResult(body, media, (w, h), {k: v * 1000.0 for k, v in t.items()})

    def _render(self, req: SegmentRequest, rgb: np.ndarray, alpha: np.ndarray,
                proc: pp.Postprocessor) -> np.ndarray:
        if req.output is Output.mask:
            return np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if req.output is Output.cutout:
            return pp.cutout(rgb, alpha)
        if req.background_image is not None:
            background: Any = decode_image(req.background_image, self.cfg.max_pixels, "background_image")
        else:
            background = req.background or "blur"
        return proc.composite(rgb, alpha, background)


def set_pil_limits(max_pixels: int) -> None:
    """PIL's own bomb guard is process-wide, so only the server process sets it (``serve``);
    decode_image's header check enforces the exact limit either way."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we answer 413 ourselves


def load_runtime(cfg: ServerConfig) -> Runtime:
    return open_model(cfg.model, backend="onnx", threads=cfg.model_threads)


def model_file(runtime: Runtime) -> Path | None:
    """The ONNX file behind the runtime (served to the browser), if it is one."""
    return runtime.path if isinstance(runtime, OnnxRuntime) else None


# --------------------------------------------------------------------------- ASGI guard


class Limiter:
    """Non-blocking counting slot: excess requests are refused, not queued without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1


Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_json(send: Send, status: int, payload: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Checks done before FastAPI parses the body, so rejected requests cost almost nothing:
    content type (415), declared size (413), concurrency (503); then counts streamed bytes so
    a chunked or lying client still hits 413."""

    def __init__(self, app: Callable, cfg: ServerConfig, limiter: Limiter) -> None:
        self.app = app
        self.cfg = cfg
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SEGMENT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, self._isolating(send) if scope["type"] == "http" else send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            await send_json(send, 415, {"error": f"content type must be multipart/form-data with an 'image' "
                                                 f"field; got {ctype or 'none'!r}"})
            return
        limit = self.cfg.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await send_json(send, 413, {"error": f"request body is {length} bytes; the limit is {limit}"})
            return
        if not self.limiter.try_acquire():
            await send_json(send, 503, {"error": "server busy: too many requests in flight; retry later"},
                            [(b"retry-after", str(self.cfg.retry_after_s).encode())])
            return
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            self.limiter.release()

    @staticmethod
    def _isolating(send: Send) -> Send:
        """Adds COOP/COEP so the web app is cross-origin isolated: onnxruntime-web needs
        SharedArrayBuffer for multi-threaded WASM (everything is same-origin, so nothing breaks)."""

        async def wrapped(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *ISOLATION_HEADERS]}
            await send(msg)

        return wrapped

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        state = {"received": 0, "too_large": False, "replaced": False}

        async def counting_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    # Cut the stream: the parser sees the end of the body and the response is
                    # swapped for a 413 in guarded_send, whatever error the parser raises.
                    return {"type": "http.request", "body": b"", "more_body": False}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["too_large"]:
                if msg["type"] == "http.response.start" and not state["replaced"]:
                    state["replaced"] = True
                    await send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})
                return
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["too_large"]:
                raise
            if not state["replaced"]:
                await send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})


# --------------------------------------------------------------------------- app


def create_app(cfg: ServerConfig | None = None, runtime: Runtime | None = None):
    """Build the FastAPI app; loads the model now (once) unless ``runtime`` is given."""
    cfg = cfg or ServerConfig()
    runtime = runtime or load_runtime(cfg)
    engine = Engine(runtime, cfg)
    pool = ThreadPoolExecutor(max_workers=cfg.worker_threads, thread_name_prefix="segment")
    limiter = Limiter(cfg.max_concurrency)

    app = FastAPI(title="portraitseg", version=_version(),
                  description="Person segmentation: masks, cut-outs and background replacement.")
    app.state.engine, app.state.limiter, app.state.pool = engine, limiter, pool
    app.router.on_shutdown.append(lambda: pool.shutdown(wait=False, cancel_futures=True))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=400)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Still JSON for clients; the traceback goes to the server log via uvicorn.
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        h, w = runtime.input_size
        return {"status": "ok", "model": runtime.name, "input_size": [h, w],
                "in_flight": limiter.in_flight, "max_concurrency": limiter.limit,
                "worker_threads": cfg.worker_threads}

    @app.get("/model.onnx", response_class=FileResponse)
    async def model_onnx() -> FileResponse:
        path = model_file(runtime)
        if path is None:
            raise ApiError(404, "the served model is not an ONNX file")
        return FileResponse(path, media_type="application/octet-stream", filename="model.onnx")

    @app.post(SEGMENT_PATH, response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}},
                               "description": "the mask (gray), cut-out (RGBA png) or composite"},
                         400: {"description": "bad input"}, 413: {"description": "too large"},
                         415: {"description": "not multipart"}, 503: {"description": "busy"},
                         504: {"description": "timed out"}})
    async def segment(
        image: Annotated[UploadFile, File(description="the photo (JPEG/PNG/WebP/BMP/GIF/TIFF)")],
        background_image: Annotated[UploadFile | None, File(description="composite background image")] = None,
        output: Annotated[Output, Query()] = Output.mask,
        background: Annotated[str, Query(description="composite background: blur, #rrggbb or a colour name",
                                         max_length=32)] = "blur",
        format: Annotated[Format | None, Query(description="png or jpeg (default: png; composite: jpeg)")
                          ] = None,
    ) -> Response:
        fmt = format or (Format.jpeg if output is Output.composite else Format.png)
        if output is Output.cutout and fmt is not Format.png:
            raise ApiError(400, "output=cutout has an alpha channel: use format=png")
        _check_part_type(image, "image")
        req = SegmentRequest(await image.read(), output, fmt, parse_colour(background))
        if background_image is not None and output is Output.composite:
            _check_part_type(background_image, "background_image")
            req.background_image = await background_image.read()
        result = await _run_in_pool(pool, engine, req, cfg.timeout_s)
        w, h = result.size
        timing = ", ".join(f"{k};dur={v:.1f}" for k, v in result.timings_ms.items())
        return Response(result.body, media_type=result.media_type,
                        headers={"x-image-size": f"{w}x{h}", "server-timing": timing})

    web_dir = cfg.web_dir
    if web_dir is not None and web_dir.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=str(web_dir), html=True), name="web")
    return _wrap(app, cfg, limiter)


def _wrap(app: Any, cfg: ServerConfig, limiter: Limiter) -> Any:
    # As a Starlette middleware the guard sits inside the error handling, so a crash in it is
    # still a 500 JSON, and ``app.state``/TestClient keep working on the returned app.
    app.add_middleware(GuardMiddleware, cfg=cfg, limiter=limiter)
    return app


def _check_part_type(part: Any, name: str) -> None:
    ctype = (part.content_type or "").lower()
    # Browsers and curl send image/*; scripts often send octet-stream. Anything else (text,
    # JSON) was sent by mistake.
    if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise ApiError(415, f"field {name!r} must be an image; got content type {ctype!r}")


async def _run_in_pool(pool: ThreadPoolExecutor, engine: Engine, req: SegmentRequest,
                       timeout_s: float) -> SegmentResult:
    future = pool.submit(engine.run, req)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)
    except asyncio.TimeoutError:
        # A queued job is dropped; a running one finishes in the background (bounded by the
        # pixel limit) and its result is discarded.
        future.cancel()
        raise ApiError(504, f"processing took longer than {timeout_s:g} s") from None


def _validation_message(exc: Any) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "required field is missing"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _version() -> str:
    from . import __version__

    return __version__
