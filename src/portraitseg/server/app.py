"""The FastAPI app (importing this module needs fastapi)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..runtimes import Runtime, open_model
from .config import ServerConfig
from .engine import ApiError, Engine, Format, Output, SegmentRequest, SegmentResult, model_file, parse_colour
from .guard import SEGMENT_PATH, GuardMiddleware, Limiter
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
    runtime = runtime or open_model(cfg.model, threads=cfg.model_threads)
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

    app.state.web_notice = _mount_web(app, cfg.web_dir) if cfg.web_dir is not None else None
    return _wrap(app, cfg, limiter)


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
        logging.getLogger("portraitseg.server").warning("web app: %s", notice)
        page = missing_runtime_page((web_dir / "index.html").read_text(encoding="utf-8"), notice)
        stub = stub_runtime_module(notice)

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
    from .. import __version__

    return __version__
