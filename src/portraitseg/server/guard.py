"""The ASGI guard: limits checked before FastAPI parses a body (method, type, size, upload
memory, concurrency)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from .budget import Budget
from .config import MB, ServerConfig

SEGMENT_PATH = "/v1/segment"
ISOLATION_HEADERS = [(b"cross-origin-opener-policy", b"same-origin"),
                     (b"cross-origin-embedder-policy", b"require-corp")]


# --------------------------------------------------------------------------- ASGI guard


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
    method (405), content type (415) and declared size (413) from the headers; room in the
    upload memory budget for the declared size (503); then the body is read in full here,
    within ``body_timeout_s`` (408) and ``max_body_bytes`` (413, counted while streaming, so a
    chunked or lying client is caught too), and only then is a concurrency slot taken (503
    when none is free). A slow or stalled upload therefore never holds a slot: it holds one
    connection and its share of ``max_upload_memory_bytes`` until its deadline. The body's
    bytes stay reserved until the answer is sent, as the request keeps them until then."""

    def __init__(self, app: Callable, cfg: ServerConfig, slots: Budget, uploads: Budget) -> None:
        self.app = app
        self.cfg = cfg
        self.slots = slots
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SEGMENT_PATH:
            await self.app(scope, receive, self._isolating(send) if scope["type"] == "http" else send)
            return
        if scope["method"] != "POST":
            # Without this, the web app's static mount at "/" answers 404 for GET /v1/segment.
            await send_json(send, 405, {"error": f"{SEGMENT_PATH} takes POST (multipart/form-data with "
                                                 f"an 'image' field); got {scope['method']}"},
                            [(b"allow", b"POST")])
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        # Two Content-Types: this dict keeps the last, FastAPI's parser reads the first, so a
        # checked multipart body was parsed as another type (400 "image: required field is missing").
        types = sum(1 for k, _ in scope["headers"] if k.lower() == b"content-type")
        if types > 1:
            why = f"the Content-Type header was given {types} times; give it once"
            await send_json(send, 400, {"error": why})
            return
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
        held = Held(self.uploads)
        try:
            if length.isdigit() and not held.take(int(length)):
                await self._busy(send, self._full())
                return
            body = await self._read_body(receive, send, limit, held)
            if body is None:  # answered (408/413/503) or the client went away
                return
            if not self.slots.try_acquire():
                await self._busy(send, "too many requests in flight")
                return
            replay = _replay(body, receive)
            del body  # the app's parser consumes it from ``replay``; no second reference here
            try:
                await self.app(scope, replay, send)
            finally:
                self.slots.release()
        finally:
            held.release()

    def _full(self) -> str:
        return f"uploads in progress fill the server's upload memory ({self.uploads.limit / MB:g} MB)"

    async def _busy(self, send: Send, why: str) -> None:
        await send_json(send, 503, {"error": f"server busy: {why}; retry later"},
                        [(b"retry-after", str(self.cfg.retry_after_s).encode())])

    async def _read_body(self, receive: Receive, send: Send, limit: int, held: Held) -> bytes | None:
        """The whole request body, or None after answering 408 (too slow), 413 (too large) or
        503 (a body of undeclared size outgrew the upload memory), or when the client left."""
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
            if received > held.n and not held.take(received - held.n):  # chunked: reserve as it comes
                await self._busy(send, self._full())
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


class Held:
    """Units one request holds in a :class:`Budget`, released once whatever happens."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.n = 0

    def take(self, n: int) -> bool:
        if not self.budget.try_acquire(n):
            return False
        self.n += n
        return True

    def release(self) -> None:
        self.budget.release(self.n)
        self.n = 0
