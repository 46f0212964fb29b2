"""``portraitseg serve``: the HTTP API (and the web app) with uvicorn."""

from __future__ import annotations

import argparse
import socket
import sys

from ._common import add_config_flags, add_postprocess_flags, config_from_args, postprocess_config

DESCRIPTION = """\
Serve the segmentation HTTP API (needs `pip install portraitseg[server]`):
  GET  /healthz        status, model and load
  POST /v1/segment     multipart field 'image'; ?output=mask|cutout|composite
                       &background=blur|COLOUR&format=png|jpeg|jpg
                       COLOUR: rrggbb, r,g,b, a name, or #rrggbb written %23rrggbb
                       (a URL ends at a bare #), e.g. &background=%2300ff00
  GET  /model.onnx     the model, for the browser app
  GET  /docs           OpenAPI docs
  GET  /               the web app (the repository's web/, or --web-dir)
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
    # Not installed: cli.main's requires_extra prints one line naming the 'server' extra and the pip
    # command that installs it here.
    import uvicorn

    from ..server import ServerConfig, create_app, set_pil_limits
    from ..server.connections import fit_open_files, uvicorn_config
    from ..server.webapp import candidate_web_dirs, locate_web_dir

    if not 0 <= args.port <= 65535:  # else socket raises OverflowError, a traceback
        raise ValueError(f"--port {args.port}: must be 0..65535 (0 picks a free port)")
    web_dir = locate_web_dir(args.web_dir)
    cfg = config_from_args(ServerConfig, args, postprocess=postprocess_config(args), web_dir=web_dir)
    cfg.validate()  # every flag checked before anything process-wide is changed below
    set_pil_limits(cfg.max_pixels)
    cfg = fit_open_files(cfg)
    sock = _listen(args.host, args.port)  # bound first, so the URL printed is the real one (--port 0)
    app = create_app(cfg)
    if web_dir is None:
        looked = ", ".join(str(d) for d in candidate_web_dirs())
        print(f"portraitseg serve: web app not found (looked in {looked}); serving the API only "
              f"(give --web-dir PATH/TO/web)", file=sys.stderr)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    where = f"web app from {web_dir}" if web_dir is not None else "no web app"
    print(f"portraitseg serve: http://{shown}:{port}/ ({where}; API docs at /docs)", flush=True)
    # One process: the model and the concurrency limit are shared by every request; the
    # thread pool inside the app does the CPU work.
    uvicorn.Server(uvicorn_config(app, cfg, log_level=args.log_level)).run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot listen on {host}:{port} ({reason})") from None
