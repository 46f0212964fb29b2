"""The ASGI guard: limits checked before FastAPI parses a body (size, type, concurrency)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .config import ServerConfig

SEGMENT_PATH = "/v1/segment"
ISOLATION_HEADERS = [(b"cross-origin-opener-policy", b"same-origin"),
                     (b"cross-origin-embedder-policy", b"require-corp")]


# --------------------------------------------------------------------------- ASGI guard


class Limiter:
    """Non-blocking counting slot: excess requests are refused, not queued without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1


Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def send_json(send: Send, status: int, payload: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Checks done before FastAPI parses the body, so rejected requests cost almost nothing:
    content type (415) and declared size (413) from the headers; then the body is read in
    full here, within ``body_timeout_s`` (408) and ``max_body_bytes`` (413, counted while
    streaming, so a chunked or lying client is caught too), and only then is a concurrency
    slot taken (503 when none is free). A slow or stalled upload therefore never holds a slot:
    it holds one connection and at most ``max_body_bytes`` of memory until its deadline."""

    def __init__(self, app: Callable, cfg: ServerConfig, limiter: Limiter) -> None:
        self.app = app
        self.cfg = cfg
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SEGMENT_PATH or scope["method"] != "POST":
            await self.app(scope, receive, self._isolating(send) if scope["type"] == "http" else send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            await send_json(send, 415, {"error": f"content type must be multipart/form-data with an 'image' "
                                                 f"field; got {ctype or 'none'!r}"})
            return
        limit = self.cfg.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await send_json(send, 413, {"error": f"request body is {length} bytes; the limit is {limit}"})
            return
        body = await self._read_body(receive, send, limit)
        if body is None:  # answered (408/413) or the client went away
            return
        if not self.limiter.try_acquire():
            await send_json(send, 503, {"error": "server busy: too many requests in flight; retry later"},
                            [(b"retry-after", str(self.cfg.retry_after_s).encode())])
            return
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.limiter.release()

    async def _read_body(self, receive: Receive, send: Send, limit: int) -> bytes | None:
        """The whole request body, or None after answering 408 (too slow) / 413 (too large) or
        when the client disconnected."""
        timeout = self.cfg.body_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        chunks: list[bytes] = []
        received = 0
        while True:
            try:
                msg = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                await send_json(send, 408, {"error": f"request body not received within {timeout:g} s"},
                                [(b"connection", b"close")])
                return None
            if msg["type"] != "http.request":  # http.disconnect: nobody to answer
                return None
            chunk = msg.get("body", b"")
            received += len(chunk)
            if received > limit:
                # No "connection: close" here: uvicorn reads and drops the rest of the body, so a
                # client still sending gets its 413 instead of a connection reset.
                await send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    def _isolating(send: Send) -> Send:
        """Adds COOP/COEP so the web app is cross-origin isolated: onnxruntime-web needs
        SharedArrayBuffer for multi-threaded WASM (everything is same-origin, so nothing breaks)."""

        async def wrapped(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *ISOLATION_HEADERS]}
            await send(msg)

        return wrapped


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the already-read body in one message, then passes
    through (so the app still sees a later ``http.disconnect``)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
