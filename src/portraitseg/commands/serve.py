"""``portraitseg serve``: the HTTP API (and the web app) with uvicorn."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .predict import add_postprocess_flags, postprocess_config

DESCRIPTION = """\
Serve the segmentation HTTP API (needs `pip install portraitseg[server]`):
  GET  /healthz        status, model and load
  POST /v1/segment     multipart field 'image'; ?output=mask|cutout|composite
                       &background=blur|#rrggbb&format=png|jpeg
  GET  /model.onnx     the model, for the browser app
  GET  /docs           OpenAPI docs
  GET  /               the web app (from --web-dir, when it exists)
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="HTTP API + web app", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, loopback only)")
    add("--port", type=int, default=8000, help="(default: 8000)")
    add("--model", default="default", help="'default' or a .onnx/.pt/.tflite file (default: default)")
    add("--workers-threads", type=_positive, default=os.cpu_count() or 1, metavar="N",
        help="inference worker threads (default: CPU count)")
    add("--model-threads", type=_positive, default=1, metavar="N",
        help="intra-op threads per inference (default: 1; the workers give the parallelism)")
    add("--max-concurrency", type=_positive, default=32, metavar="N",
        help="requests in flight before answering 503 (default: 32)")
    add("--max-body-mb", type=float, default=10.0, metavar="MB", help="request size limit (default: 10)")
    add("--max-megapixels", type=float, default=25.0, metavar="MP", help="image size limit (default: 25)")
    add("--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (default: 30)")
    add("--web-dir", type=Path, default=Path("web"), help="static web app folder (default: ./web)")
    add("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))
    add_postprocess_flags(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ValueError("the server needs extra packages: pip install 'portraitseg[server]'") from None
    from ..server import MB, ServerConfig, create_app, set_pil_limits

    cfg = ServerConfig(
        model=args.model,
        worker_threads=args.workers_threads,
        model_threads=args.model_threads,
        max_concurrency=args.max_concurrency,
        max_body_bytes=int(args.max_body_mb * MB),
        max_pixels=int(args.max_megapixels * 1e6),
        timeout_s=args.timeout,
        web_dir=args.web_dir,
        postprocess=postprocess_config(args),
    )
    set_pil_limits(cfg.max_pixels)
    app = create_app(cfg)
    # One process: the model and the concurrency limit are shared by every request; the
    # thread pool inside the app does the CPU work.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
