"""The server's settings; its fields generate the ``portraitseg serve`` flags (no fastapi here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import postprocess as pp
from ..defaults import MAX_PIXELS
from ..options import option as _opt

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    model: str = _opt("default", "'default' (bundled model, fastest installed backend) or a model file")
    worker_threads: int = _opt(help="inference worker threads; the default is the CPU count",
                               factory=lambda: os.cpu_count() or 1, flag="--workers-threads", metavar="N")
    model_threads: int = _opt(1, "intra-op threads per inference (the workers give the parallelism)",
                              metavar="N")
    max_concurrency: int = _opt(32, "requests in flight (queued + running) before answering 503", metavar="N")
    max_body_bytes: int = _opt(10 * MB, "request size limit", flag="--max-body-mb", scale=MB, type=float,
                               metavar="MB")
    max_pixels: int = _opt(MAX_PIXELS, "image size limit", flag="--max-megapixels", scale=1e6, type=float,
                           metavar="MP")
    timeout_s: float = _opt(30.0, "per-request timeout", flag="--timeout", metavar="S")
    # The body is read before a concurrency slot is taken (guard.py): this bounds how long a
    # slow or stalled upload may hold its connection (10 MB in 10 s is 1 MB/s).
    body_timeout_s: float = _opt(10.0, "seconds a client has to send the whole request body (then 408)",
                                 flag="--body-timeout", metavar="S")
    retry_after_s: int = _opt(1, "Retry-After seconds of a 503", metavar="S")
    # None: no web app (the library); `serve` locates the repository's web/ itself (webapp.py).
    web_dir: Path | None = _opt(None, "the web app folder (default: the repository's web/, found from the "
                                "installed package, not the current folder)", type=Path)
    postprocess: pp.PostprocessConfig = field(default_factory=pp.PostprocessConfig)

    def validate(self) -> None:
        for name in ("worker_threads", "model_threads", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        for name, flag in (("timeout_s", "timeout"), ("body_timeout_s", "body-timeout")):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{flag} must be > 0; got {getattr(self, name)}")
