"""Connection limits for uvicorn: a request-head timeout, a cap on open connections, and an
open-file limit that fits the cap.

Why: uvicorn times out idle keep-alive connections only after a response; a connection that
never sends a request (or sends its head a byte a minute) is kept forever, and there is no cap.
1,100 silent sockets took every open file of the process: ``/healthz`` timed out and asyncio
logged a traceback per failed accept.

Here each connection must complete a request head within ``header_timeout_s`` of connecting or
of its previous answer, else it is closed. At ``max_connections`` a new connection closes the
connection that has waited longest for a request head (an idle or silent one: nginx does the
same with idle keep-alive connections), so silent sockets cannot lock clients out; when every
connection is mid-request the new one gets a 503. ``fit_open_files`` makes sure the process may
open that many sockets plus what it needs besides.

A client that stops reading its answer is closed once ``send_timeout_s`` passes with none of the
unsent bytes taken. Why: asyncio keeps what the socket cannot take in the connection's buffer,
and ``close()`` waits for that buffer to be sent. Four clients that never read a 28 MB static
file held all of ``--max-connections 4`` (every later client got 503, for good, and SIGTERM never
finished); six that never read a 58 MB composite PNG (a 2.7 MB upload) kept 356 MB of the
server's memory and their sockets after their connections were counted as closed.

The guard is a subclass of uvicorn's own HTTP protocol (``uvicorn.Config(http=...)`` takes a
class); it uses the asyncio ``Protocol`` methods plus uvicorn's ``cycle`` (the request being
served) and ``on_response_complete`` hooks, which both of uvicorn's HTTP implementations have.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import resource
import struct
from typing import Any

from .config import ServerConfig
from .logs import LOGGER

# Open files the server needs besides its connections: model, libraries, log, listening
# socket, event-loop pipes, thread pools (generous: running out is far worse than unused room).
RESERVED_FILES = 64
# Multipart uploads over 1 MB are spooled to temporary files: up to two per request in flight.
FILES_PER_REQUEST = 2
_BUSY = b'{"error": "server busy: too many open connections; retry later"}'
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
           b"retry-after: 1\r\ncontent-length: " + str(len(_BUSY)).encode() + b"\r\n\r\n" + _BUSY)


class ConnectionGuard:
    """The connections of one server: which are open, and which wait for a request head
    (oldest first: a dict keeps insertion order)."""

    def __init__(self, max_connections: int, header_timeout_s: float, send_timeout_s: float = 30.0) -> None:
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.send_timeout_s = send_timeout_s
        self.open: set[Any] = set()
        self.waiting: dict[Any, None] = {}
        self.log = logging.getLogger(LOGGER)

    def admit(self) -> bool:
        """Room for one more connection, closing the longest-waiting one at the cap."""
        if len(self.open) < self.max_connections:
            return True
        if not self.waiting:
            self.log.warning("refused connections with 503: all %d connections are busy with requests "
                             "(--max-connections)", self.max_connections)
            return False
        oldest = next(iter(self.waiting))
        oldest.drop()
        self.log.warning("at %d open connections (--max-connections): closing the longest-idle ones to "
                         "admit new ones", self.max_connections)
        return True


class _GuardedProtocol:
    """Mixed in before a uvicorn HTTP protocol class (see :func:`guarded_protocol`)."""

    guard: ConnectionGuard  # set on the generated class
    _refused = False
    _timer: asyncio.TimerHandle | None = None
    _idle_cycle: Any = None
    _send_timer: asyncio.TimerHandle | None = None
    _unsent = 0  # bytes waiting in the transport's buffer at the send clock's last tick
    _half_closed = False

    def connection_made(self, transport: Any) -> None:
        if not self.guard.admit():
            self._refused = True
            transport.write(REFUSAL)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[misc]
        self.guard.open.add(self)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self in self.guard.waiting and self.cycle is not self._idle_cycle:  # type: ignore[attr-defined]
            self._stop_waiting()  # a request head was parsed: the request's own limits apply now

    def eof_received(self) -> bool | None:
        # The client shut down its sending side after its request (``nc -N``, some HTTP/1.0
        # clients): uvicorn closed the connection at once, so it got no answer at all. Keep the
        # sending side open while its request is in progress; closed once it is answered.
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is not None and cycle is not self._idle_cycle and not cycle.response_complete:
            self._half_closed = True
            return True
        return None  # nothing asked: the transport closes

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        cycle = self.cycle  # type: ignore[attr-defined]
        if self.transport.is_closing() or not (cycle is None or cycle.response_complete):  # type: ignore[attr-defined]
            return  # (a pipelined request already parsed has a new, open cycle)
        if self._half_closed:
            self.transport.close()  # type: ignore[attr-defined]  # no further request can come
        else:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._stop_waiting()
        self._stop_send_clock()
        self.guard.open.discard(self)
        super().connection_lost(exc)  # type: ignore[misc]

    # -- the request-head clock
    def _await_head(self) -> None:
        self._stop_waiting()
        self._idle_cycle = self.cycle  # type: ignore[attr-defined]
        self.guard.waiting[self] = None
        self._timer = self.loop.call_later(self.guard.header_timeout_s, self._head_timeout)  # type: ignore[attr-defined]

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if self in self.guard.waiting:
            self.guard.log.warning("closed connections that sent no complete request head within %g s "
                                   "(--header-timeout)", self.guard.header_timeout_s)
            self.drop()

    def drop(self) -> None:
        """Close this (idle) connection now; it no longer counts against the cap."""
        self._stop_waiting()
        self.guard.open.discard(self)
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]
        if self.transport.get_write_buffer_size():  # type: ignore[attr-defined]
            self._start_send_clock()  # close() waits for the rest of an answer: not forever

    # -- the send clock: a client must keep taking its answer
    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self._start_send_clock()  # the socket took no more: the app waits until it drains

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._stop_send_clock()  # (a closing one still has its last bytes to send)

    def _start_send_clock(self) -> None:
        # While the clock runs nothing is added to the buffer (the app waits in uvicorn's
        # drain, or the connection is closing), so unsent bytes that have not shrunk mean the
        # client took nothing for a whole tick.
        if self._send_timer is None:
            self._unsent = self._unsent_bytes()
            self._send_timer = self.loop.call_later(self.guard.send_timeout_s, self._send_tick)  # type: ignore[attr-defined]

    def _unsent_bytes(self) -> int:
        """The connection's buffer plus what the kernel holds unacknowledged: the kernel takes
        from the buffer only once megabytes are free in its own queue, so a slow reader (20 kB/s)
        can go minutes without the buffer shrinking while the kernel's queue does."""
        return self.transport.get_write_buffer_size() + kernel_unsent(self.transport)  # type: ignore[attr-defined]

    def _stop_send_clock(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_tick(self) -> None:
        self._send_timer = None
        if not self.transport.get_write_buffer_size():  # type: ignore[attr-defined]
            return  # all handed to the kernel, which sends (or gives up on) the rest itself
        if self._unsent_bytes() < self._unsent:  # slow but reading: another tick
            self._start_send_clock()
            return
        self.guard.log.warning("closed connections that read none of their answer for %g s (--send-timeout)",
                               self.guard.send_timeout_s)
        self.guard.open.discard(self)
        self._stop_waiting()
        self.transport.abort()  # type: ignore[attr-defined]  # drops the unsent bytes; close() would wait


def kernel_unsent(transport: Any) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the client (Linux
    ``TIOCOUTQ``); 0 where that cannot be read."""
    sock = transport.get_extra_info("socket")
    try:
        import fcntl
        import termios

        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (AttributeError, ImportError, OSError):
        return 0
    return struct.unpack("i", out)[0]


def guarded_protocol(guard: ConnectionGuard, base: type[asyncio.Protocol] | None = None
                     ) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``base``; default: the one uvicorn would pick) under ``guard``."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    return type(f"Guarded{base.__name__}", (_GuardedProtocol, base), {"guard": guard})


def uvicorn_config(app: Any, cfg: ServerConfig, **kwargs: Any) -> Any:
    """The ``uvicorn.Config`` that serves ``app`` under ``cfg``'s connection limits (``serve``
    and the tests both start servers through it)."""
    import uvicorn

    guard = ConnectionGuard(cfg.max_connections, cfg.header_timeout_s, cfg.send_timeout_s)
    kwargs.setdefault("access_log", False)
    # On SIGTERM/SIGINT uvicorn waits for every connection to close, without a bound by default:
    # one client reading a large answer a byte at a time kept the server from exiting. A request
    # in progress has its answer within --timeout; after that the rest are closed.
    kwargs.setdefault("timeout_graceful_shutdown", cfg.timeout_s)
    return uvicorn.Config(app, http=guarded_protocol(guard), **kwargs)


def fit_open_files(cfg: ServerConfig) -> ServerConfig:
    """Raise the process's soft open-file limit so ``max_connections`` fit (up to the hard
    limit); if they still do not, lower ``max_connections`` to what fits and say so once.
    Process-wide, so only ``serve`` calls it."""
    other = RESERVED_FILES + FILES_PER_REQUEST * cfg.max_concurrency
    need = cfg.max_connections + other
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(hard, need)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY or soft >= need:
        return cfg
    room = soft - other
    if room < 8:
        raise ValueError(f"the open-file limit ({soft}, ulimit -n) leaves no room for connections next "
                         f"to --max-concurrency {cfg.max_concurrency}; raise the limit or lower "
                         "--max-concurrency")
    logging.getLogger(LOGGER).warning("--max-connections %d lowered to %d: the open-file limit is %d "
                                      "(ulimit -n)", cfg.max_connections, room, soft)
    return dataclasses.replace(cfg, max_connections=room)
