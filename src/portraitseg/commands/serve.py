"""``portraitseg serve``: the HTTP API (and the web app) with uvicorn."""

from __future__ import annotations

import argparse

from ._common import add_config_flags, add_postprocess_flags, config_from_args, postprocess_config

DESCRIPTION = """\
Serve the segmentation HTTP API (needs `pip install portraitseg[server]`):
  GET  /healthz        status, model and load
  POST /v1/segment     multipart field 'image'; ?output=mask|cutout|composite
                       &background=blur|#rrggbb&format=png|jpeg
  GET  /model.onnx     the model, for the browser app
  GET  /docs           OpenAPI docs
  GET  /               the web app (from --web-dir, when it exists)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..server.config import ServerConfig

    parser = subparsers.add_parser("serve", help="HTTP API + web app", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    # Where uvicorn listens (not part of the app's ServerConfig).
    add("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, loopback only)")
    add("--port", type=int, default=8000, help="TCP port to listen on (default: 8000)")
    add("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default: warning)")
    add_config_flags(parser, ServerConfig)
    add_postprocess_flags(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ValueError("the server needs extra packages: pip install 'portraitseg[server]'") from None
    from ..server import ServerConfig, create_app, set_pil_limits

    cfg = config_from_args(ServerConfig, args, postprocess=postprocess_config(args))
    cfg.validate()
    set_pil_limits(cfg.max_pixels)
    app = create_app(cfg)
    # One process: the model and the concurrency limit are shared by every request; the
    # thread pool inside the app does the CPU work.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
