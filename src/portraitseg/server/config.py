"""The server's settings; its fields generate the ``portraitseg serve`` flags (no fastapi here)."""

from __future__ import annotations

import math
import os
from dataclasses import Field, dataclass, field, fields
from pathlib import Path

from .. import postprocess as pp
from ..defaults import MAX_PIXELS, MAX_THREADS
from ..options import flag_name
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
    # Idle and silent connections hold a socket each: without these, 1,100 of them used up the
    # process's open files and nothing else got in (see connections.py).
    max_connections: int = _opt(256, "open connections; at the limit the longest-idle one is closed "
                                "(503 when none is idle)", metavar="N")
    header_timeout_s: float = _opt(10.0, "seconds a connection has to send a request's headers (after "
                                   "connecting, or after its previous answer); then it is closed",
                                   flag="--header-timeout", metavar="S")
    # A client that stops reading keeps its unsent answer in the server's memory and its
    # connection open (connections.py).
    send_timeout_s: float = _opt(30.0, "seconds a client may take none of an answer being sent to it; then "
                                 "the connection is closed", flag="--send-timeout", metavar="S")
    # Memory: bodies are held whole until answered, decoded images cost ~35 bytes per pixel at peak
    # through post-processing; these bound the sum over all requests (503/wait beyond).
    max_upload_memory_bytes: int = _opt(256 * MB, "request bodies held in memory at once (uploads and "
                                        "requests in progress); a new upload past it gets 503",
                                        flag="--max-upload-memory-mb", scale=MB, type=float, metavar="MB")
    max_inflight_pixels: int = _opt(2 * MAX_PIXELS, "image pixels decoded and processed at once over all "
                                    "requests; others wait for room (503 at their timeout)",
                                    flag="--max-inflight-megapixels", scale=1e6, type=float, metavar="MP")
    retry_after_s: int = _opt(1, "Retry-After seconds of a 503", metavar="S")
    # None: no web app (the library); `serve` locates the repository's web/ itself (webapp.py).
    web_dir: Path | None = _opt(None, "the web app folder (default: the repository's web/, found from the "
                                "installed package, not the current folder)", type=Path)
    postprocess: pp.PostprocessConfig = field(default_factory=pp.PostprocessConfig)

    def validate(self) -> None:
        """Raise ValueError naming the flag (one line) for any setting the server cannot run with."""
        for name in ("worker_threads", "model_threads", "max_concurrency", "max_connections"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{_flag(name)} must be >= 1; got {getattr(self, name)}")
        for name in ("worker_threads", "model_threads"):
            if getattr(self, name) > MAX_THREADS:
                raise ValueError(f"{_flag(name)} must be at most {MAX_THREADS}; got {getattr(self, name)}")
        for name in ("max_body_bytes", "max_pixels", "max_upload_memory_bytes", "max_inflight_pixels"):
            if not getattr(self, name) >= 1:  # a flag in MB/MP of 0, below 0, or too small to be 1 unit
                raise ValueError(f"{_flag(name)} must be > 0; got {_shown(name, getattr(self, name))}")
        for name in ("timeout_s", "body_timeout_s", "header_timeout_s", "send_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{_flag(name)} must be a positive number of seconds; got {value}")
        if self.retry_after_s < 0:
            raise ValueError(f"{_flag('retry_after_s')} must be >= 0; got {self.retry_after_s}")
        # Else a request at the size limit could never be admitted.
        pairs = (("max_upload_memory_bytes", "max_body_bytes"), ("max_inflight_pixels", "max_pixels"))
        for budget, limit in pairs:
            if getattr(self, budget) < getattr(self, limit):
                raise ValueError(f"{_flag(budget)} ({_shown(budget, getattr(self, budget))}) must be at "
                                 f"least {_flag(limit)} ({_shown(limit, getattr(self, limit))})")


def _flag(name: str) -> str:
    """The ``serve`` flag of a field, as the CLI generates it (:func:`portraitseg.options.flag_name`)."""
    return flag_name(_field(name))


def _shown(name: str, value: float) -> str:
    """``value`` in the flag's units (MB, MP)."""
    scale = _field(name).metadata.get("scale")
    return f"{value / scale:g}" if scale else str(value)


def _field(name: str) -> Field:
    return next(f for f in fields(ServerConfig) if f.name == name)
