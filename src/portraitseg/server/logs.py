"""One log line per cause, not per failure.

Why: a failure that repeats per connection or per request floods the log. 1,100 silent
sockets against a 1,024-file limit made asyncio log "socket.accept() out of system resource"
with a traceback for every retried accept: 122 MB in 30 s, which also costs the CPU the server
needed. :class:`CauseFilter` sits on the server's loggers and lets the first record of each
cause through (OS resource errors as one line, without the traceback that says nothing about
the environment), drops its repeats, and reports how many it dropped with the next record of
that cause after ``interval_s``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import threading
import time
from collections.abc import Callable

LOGGER = "portraitseg.server"
# The loggers a running server writes to: ours, uvicorn's, asyncio's (accept errors and
# exceptions in callbacks go through the loop's default exception handler), and the multipart
# parser's, which warns once per malformed body (named ``multipart`` before python-multipart 0.0.13).
SERVER_LOGGERS = (LOGGER, "uvicorn.error", "asyncio", "python_multipart.multipart", "multipart.multipart")
# Errors of the machine, not of the code: a traceback adds nothing to their one line.
RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT}


class CauseFilter(logging.Filter):
    """Passes the first record of each cause per ``interval_s`` (see the module docstring)."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # cause -> (time reported, dropped since)
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        cause = self.cause(record)
        now = self.clock()
        with self._lock:
            reported, dropped = self._seen.get(cause, (None, 0))
            if reported is not None and now - reported < self.interval_s:
                self._seen[cause] = (reported, dropped + 1)
                return False
            self._seen[cause] = (now, 0)
        self._one_line(record, dropped, None if reported is None else now - reported)
        return True

    @staticmethod
    def cause(record: logging.LogRecord) -> str:
        """The message template's first line, plus the exception type and errno if any (a
        template, so per-connection details in its arguments do not make a new cause)."""
        first = str(record.msg).split("\n", 1)[0]
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return first
        return f"{first} [{type(exc).__name__} {getattr(exc, 'errno', '') or ''}]"

    @staticmethod
    def _one_line(record: logging.LogRecord, dropped: int, since_s: float | None) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        resource = isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS
        # A request still running when shutdown's wait (--timeout) ran out is cancelled:
        # uvicorn logged a 40-line traceback of library frames for each.
        cancelled = isinstance(exc, asyncio.CancelledError)
        if not (resource or cancelled or dropped):
            return
        text = record.getMessage()
        if resource:
            text = f"{text.split(chr(10), 1)[0]}: {exc}"
            record.exc_info, record.exc_text = None, None
        elif cancelled:
            why = str(exc) or "shutdown"
            text = f"{text.split(chr(10), 1)[0]}: a request still in progress was cancelled ({why})"
            record.exc_info, record.exc_text = None, None
        if dropped:
            text = f"{text} (and {dropped} more like it in the last {since_s:.0f} s)"
        record.msg, record.args = text, ()


def install_cause_filter(interval_s: float = 60.0) -> CauseFilter:
    """Put one :class:`CauseFilter` on the server's loggers (once per process: loggers are
    process-wide, so a second app reuses the first filter)."""
    existing = [f for f in logging.getLogger(LOGGER).filters if isinstance(f, CauseFilter)]
    filt = existing[0] if existing else CauseFilter(interval_s)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if filt not in logger.filters:
            logger.addFilter(filt)
    return filt
