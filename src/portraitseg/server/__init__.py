"""HTTP API: ``portraitseg serve`` (FastAPI + uvicorn, ``pip install portraitseg[server]``).

Modules: ``config`` (:class:`ServerConfig`, no fastapi needed), ``engine`` (request parsing,
one pipeline per worker thread), ``guard`` (the ASGI limits) and ``app`` (the FastAPI app;
importing it needs fastapi).

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
full decode), wrong content type (415), empty/corrupt image (400, whatever PIL raises), body not
in within ``body_timeout_s`` (408), in-flight requests over ``max_concurrency`` (503 +
Retry-After, counted only once the body is in, so slow uploads hold no slot), per-request
timeout (504). Nothing in a request is ever used as a path or URL.

The model is opened once (:func:`~portraitseg.runtimes.open_model`; ``default`` = the bundled
model on the fastest installed backend) and every worker thread runs requests through its own
:class:`~portraitseg.pipeline.Pipeline` (``threading.local``: post-processing buffers are per
thread). An onnxruntime session is shared by all threads; a TFLite interpreter is not
thread-safe, so each thread gets its own copy (``Runtime.for_thread``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr
from .config import MB, ServerConfig
from .engine import ApiError, Engine, decode_image, encode, model_file, parse_colour, set_pil_limits

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["MB", "ApiError", "Engine", "ServerConfig", "create_app", "decode_image", "encode", "model_file",
           "parse_colour", "set_pil_limits"]


# Lazy: the CLI reads ServerConfig to build `serve`'s flags without fastapi installed.
__getattr__ = lazy_getattr(__name__, {"create_app": ".app"})
