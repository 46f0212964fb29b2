"""HTTP API: ``portraitseg serve`` (FastAPI + uvicorn, ``pip install portraitseg[server]``).

Modules: ``config`` (:class:`ServerConfig`, no fastapi needed), ``request`` (what a request
asks for, validated first), ``decode`` (uploads -> RGB with the header limits), ``engine`` (one
pipeline per worker thread, deadlines, memory), ``budget`` (the shared "how much at once"
limits), ``guard`` (the ASGI limits), ``connections`` (header timeout and connection cap for
uvicorn), ``logs`` (one log line per cause) and ``app`` (the FastAPI app; importing it needs
fastapi).

Endpoints
---------
``GET /healthz``            liveness + model info and current load.
``POST /v1/segment``        multipart field ``image`` (+ optional ``background_image``);
                            query ``output=mask|cutout|composite``, ``background=blur|colour``
                            (``#rrggbb`` as ``%23rrggbb`` in a URL, ``rrggbb``, ``r,g,b``, a name),
                            ``format=png|jpeg|jpg``. Returns the encoded image.
``GET /model.onnx``         the served ONNX model (for the in-browser web app).
``GET /docs``               OpenAPI UI. ``/`` serves the ``web/`` folder when present.

Hardening: every limit answers JSON ``{"error": "..."}`` with a specific status: body size (413,
checked on Content-Length *and* while streaming), pixel count, JPEG scan count and encoder side
limits (413, from the header before the full decode), wrong content type (415), wrong method
(405), empty/corrupt image or bad parameter (400, before any work), body not in within
``body_timeout_s`` (408), in-flight requests over ``max_concurrency`` or uploads over
``max_upload_memory_bytes`` (503 + Retry-After; slots are counted only once the body is in, so
slow uploads hold no slot, and an answer holds its slot until the client has taken it),
per-request timeout (504: the worker stops at its next stage), a full temporary disk (507) or no
files/memory left (503). Connections must send a request head within ``header_timeout_s``; at
``max_connections`` the longest-idle one is closed; one that takes none of its answer for
``send_timeout_s`` is closed too. Image pixels in flight are capped by ``max_inflight_pixels``,
and buffers of large images are given back to the OS. Nothing in a request is ever used as a path or URL.

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
from .decode import decode_image, set_pil_limits
from .engine import Engine, encode, model_file
from .request import ApiError, parse_background

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["MB", "ApiError", "Engine", "ServerConfig", "create_app", "decode_image", "encode", "model_file",
           "parse_background", "set_pil_limits"]


# Lazy: the CLI reads ServerConfig to build `serve`'s flags without fastapi installed.
__getattr__ = lazy_getattr(__name__, {"create_app": ".app"})
