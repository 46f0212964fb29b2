"""The FastAPI app (importing this module needs fastapi)."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runtimes import Runtime, open_model
from .budget import Budget
from .config import MB, ServerConfig
from .engine import Engine, Prepared, SegmentResult, model_file
from .guard import SEGMENT_PATH, GuardMiddleware
from .logs import LOGGER, install_cause_filter
from .request import (
    BACKGROUND_HELP,
    ApiError,
    Format,
    Output,
    RequestExpired,
    SegmentRequest,
    parse_background,
)
from .webapp import (
    RUNTIME_ENTRY,
    is_web_app,
    locate_runtime,
    missing_runtime_page,
    runtime_fix,
    stub_runtime_module,
)

# --------------------------------------------------------------------------- app


def create_app(cfg: ServerConfig | None = None, runtime: Runtime | None = None):
    """Build the FastAPI app; loads the model now (once) unless ``runtime`` is given."""
    cfg = cfg or ServerConfig()
    cfg.validate()
    install_cause_filter()
    runtime = runtime or open_model(cfg.model, threads=cfg.model_threads)
    slots, uploads = Budget(cfg.max_concurrency), Budget(cfg.max_upload_memory_bytes)
    engine = Engine(runtime, cfg, Budget(cfg.max_inflight_pixels))
    pool = ThreadPoolExecutor(max_workers=cfg.worker_threads, thread_name_prefix="segment")

    app = FastAPI(title="portraitseg", version=_version(),
                  description="Person segmentation: masks, cut-outs and background replacement.")
    app.state.engine, app.state.slots, app.state.uploads, app.state.pool = engine, slots, uploads, pool
    app.router.on_shutdown.append(lambda: pool.shutdown(wait=False, cancel_futures=True))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI reports any failure while parsing a body as 400; a full disk is not the client's.
        fault = server_fault(exc)
        if fault is not None:
            return _error(fault)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=400)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        fault = server_fault(exc)
        if fault is not None:
            return _error(fault)
        # Still JSON for clients; the traceback goes to the server log via uvicorn.
        return JSONResponse({"error": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        h, w = runtime.input_size
        return {"status": "ok", "model": runtime.name, "input_size": [h, w],
                "in_flight": slots.used, "max_concurrency": slots.limit,
                "worker_threads": cfg.worker_threads, "upload_mb_held": round(uploads.used / MB, 3),
                "megapixels_in_progress": round(engine.pixels.used / 1e6, 3)}

    @app.get("/model.onnx", response_class=FileResponse)
    async def model_onnx() -> FileResponse:
        path = model_file(runtime)
        if path is None:
            raise ApiError(404, "the served model is not an ONNX file")
        return FileResponse(path, media_type="application/octet-stream", filename="model.onnx")

    # HEAD as GET (monitors and caches probe with it; the server sends no body for HEAD).
    for path, endpoint in (("/healthz", healthz), ("/model.onnx", model_onnx)):
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.post(SEGMENT_PATH, response_class=Response,
              responses={200: {"content": {"image/png": {}, "image/jpeg": {}},
                               "description": "the mask (gray), cut-out (RGBA png) or composite"},
                         400: {"description": "bad input"}, 413: {"description": "too large"},
                         415: {"description": "not multipart"}, 503: {"description": "busy"},
                         504: {"description": "timed out"},
                         507: {"description": "the server's temporary storage is full"}})
    async def segment(
        request: Request,
        image: Annotated[UploadFile, File(description="the photo (JPEG/PNG/WebP/BMP/GIF/TIFF)")],
        background_image: Annotated[UploadFile | None, File(description="composite background image")] = None,
        output: Annotated[Output, Query()] = Output.mask,
        background: Annotated[str, Query(description=BACKGROUND_HELP, max_length=32)] = "blur",
        format: Annotated[Format | None, Query(description="png or jpeg (or jpg) (default: png; composite: "
                                               "jpeg)")] = None,
    ) -> Response:
        deadline = time.monotonic() + cfg.timeout_s
        _check_given_once(request.query_params, await request.form())
        fmt = format or (Format.jpeg if output is Output.composite else Format.png)
        if output is Output.cutout and fmt is not Format.png:
            raise ApiError(400, "output=cutout has an alpha channel: use format=png")
        _check_part_type(image, "image")
        colour = parse_background(background)  # before any work: a bad value is a 400, not a 500 later
        req = SegmentRequest(await image.read(), output, fmt, colour, deadline=deadline)
        if background_image is not None and output is Output.composite:
            _check_part_type(background_image, "background_image")
            req.background_image = await background_image.read()
        # Header limits (400/413) off the event loop but before queueing for a worker.
        prepared = await asyncio.to_thread(engine.prepare, req)
        result = await _run_in_pool(pool, engine, req, prepared)
        w, h = result.size
        timing = ", ".join(f"{k};dur={v:.1f}" for k, v in result.timings_ms.items())
        return PacedResponse(result.body, media_type=result.media_type,
                             headers={"x-image-size": f"{w}x{h}", "server-timing": timing})

    app.state.web_notice = _mount_web(app, cfg.web_dir) if cfg.web_dir is not None else None
    return _wrap(app, cfg, slots, uploads)


class PacedResponse(Response):
    """A response whose body goes to the server in pieces: uvicorn waits for the client to take
    each before the next (flow control), so the request keeps its concurrency slot and upload
    memory (guard.py) until its answer is out. Why: a whole body handed over at once sat in the
    connection's buffer after the request had let go of both; clients that read slowly could
    each keep a 58 MB composite in the server's memory, with no limit on how many."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body = memoryview(self.body)
        for start in range(0, max(len(body), 1), PIECE_BYTES):
            more = start + PIECE_BYTES < len(body)
            await send({"type": "http.response.body", "body": bytes(body[start:start + PIECE_BYTES]),
                        "more_body": more})


PIECE_BYTES = 1 * MB


def _mount_web(app: FastAPI, web_dir: Path) -> str | None:
    """Serve the web app at ``/`` and its runtime at ``/vendor/``; returns (and logs) the fix
    when onnxruntime-web is missing, which the page then shows instead of hanging."""
    from fastapi.staticfiles import StaticFiles

    if not is_web_app(web_dir):
        return None
    runtime = locate_runtime(web_dir)
    notice = None
    if runtime is None:
        notice = runtime_fix(web_dir)
        logging.getLogger(LOGGER).warning("web app: %s", notice)
        public = runtime_fix(web_dir, public=True)  # clients never see the server's folders
        page = missing_runtime_page((web_dir / "index.html").read_text(encoding="utf-8"), public)
        stub = stub_runtime_module(public)

        async def index() -> HTMLResponse:
            return HTMLResponse(page)

        async def runtime_stub() -> Response:
            return Response(stub, media_type="text/javascript")

        # Routes are matched before the static mount below.
        for path in ("/", "/index.html"):
            app.add_api_route(path, index, methods=["GET"], include_in_schema=False)
        app.add_api_route(f"/vendor/{RUNTIME_ENTRY}", runtime_stub, methods=["GET"], include_in_schema=False)
    elif runtime != web_dir / "vendor":  # an installed onnxruntime-web npm package
        app.mount("/vendor", StaticFiles(directory=str(runtime)), name="vendor")
    app.mount("/", StaticFiles(directory=str(web_dir), html=True), name="web")
    return notice


def _wrap(app: Any, cfg: ServerConfig, slots: Budget, uploads: Budget) -> Any:
    # As a Starlette middleware the guard sits inside the error handling, so a crash in it is
    # still a 500 JSON, and ``app.state``/TestClient keep working on the returned app.
    app.add_middleware(GuardMiddleware, cfg=cfg, slots=slots, uploads=uploads)
    return app


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers or None)


# errno -> (status, what the client is told): trouble of the server's machine, not the request.
SERVER_FAULTS = {errno.ENOSPC: (507, "the server's temporary storage is full"),
                 errno.EDQUOT: (507, "the server's temporary storage is full"),
                 errno.EMFILE: (503, "the server has too many open files"),
                 errno.ENFILE: (503, "the server has too many open files"),
                 errno.ENOMEM: (503, "the server is out of memory"),
                 errno.ENOBUFS: (503, "the server is out of memory")}


def server_fault(exc: BaseException) -> ApiError | None:
    """The 503/507 for an exception caused (anywhere in its chain) by the server running out
    of disk, files or memory; None for anything else. Logged once per cause (logs.py)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        status, what = (503, "the server is out of memory") if isinstance(cur, MemoryError) else \
            SERVER_FAULTS.get(getattr(cur, "errno", None) if isinstance(cur, OSError) else None, (0, ""))
        if status:
            logging.getLogger(LOGGER).error("answered %d: %s (%s)", status, what, cur)
            return ApiError(status, f"{what}; retry later")
        cur = cur.__cause__ or cur.__context__
    return None


def _check_part_type(part: Any, name: str) -> None:
    ctype = (part.content_type or "").lower()
    # Browsers and curl send image/*; scripts often send octet-stream. Anything else (text,
    # JSON) was sent by mistake.
    if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise ApiError(415, f"field {name!r} must be an image; got content type {ctype!r}")


# What a request may give once: with two, FastAPI silently took the last one (two ``image`` parts:
# the second was segmented, or its error reported for a good first one).
SINGLE_QUERY = ("output", "background", "format")
SINGLE_FIELDS = ("image", "background_image")


def _check_given_once(query: Any, form: Any) -> None:
    for where, keys, items in (("query parameter", SINGLE_QUERY, query), ("field", SINGLE_FIELDS, form)):
        for key in keys:
            n = len(items.getlist(key))
            if n > 1:
                raise ApiError(400, f"{where} {key!r} was given {n} times; give it once")


async def _run_in_pool(pool: ThreadPoolExecutor, engine: Engine, req: SegmentRequest,
                       prepared: Prepared) -> SegmentResult:
    future = pool.submit(engine.run, req, prepared)
    timeout_s = engine.cfg.timeout_s
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), max(req.deadline - time.monotonic(), 0.0))
    except (asyncio.TimeoutError, RequestExpired):
        # A queued job is dropped; a running one stops at its next stage (engine.py: the
        # decode itself is bounded by the pixel and JPEG scan limits).
        future.cancel()
        raise ApiError(504, f"processing took longer than {timeout_s:g} s") from None


def _validation_message(exc: Any) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "required field is missing"
        elif "UploadFile" in msg:  # a form field without a filename: a value, not a file
            msg = "must be a file (a part with a filename, as curl -F 'image=@photo.jpg' sends)"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _version() -> str:
    from .. import __version__

    return __version__
