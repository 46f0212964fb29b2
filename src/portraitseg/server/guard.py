"""The ASGI guard: limits checked before FastAPI parses a body (size, type, concurrency)."""

from __future__ import annotations

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
    content type (415), declared size (413), concurrency (503); then counts streamed bytes so
    a chunked or lying client still hits 413."""

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
        if not self.limiter.try_acquire():
            await send_json(send, 503, {"error": "server busy: too many requests in flight; retry later"},
                            [(b"retry-after", str(self.cfg.retry_after_s).encode())])
            return
        try:
            await self._guarded(scope, receive, send, limit)
        finally:
            self.limiter.release()

    @staticmethod
    def _isolating(send: Send) -> Send:
        """Adds COOP/COEP so the web app is cross-origin isolated: onnxruntime-web needs
        SharedArrayBuffer for multi-threaded WASM (everything is same-origin, so nothing breaks)."""

        async def wrapped(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*msg.get("headers", []), *ISOLATION_HEADERS]}
            await send(msg)

        return wrapped

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        state = {"received": 0, "too_large": False, "replaced": False}

        async def counting_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                state["received"] += len(msg.get("body", b""))
                if state["received"] > limit:
                    state["too_large"] = True
                    # Cut the stream: the parser sees the end of the body and the response is
                    # swapped for a 413 in guarded_send, whatever error the parser raises.
                    return {"type": "http.request", "body": b"", "more_body": False}
            return msg

        async def guarded_send(msg: Message) -> None:
            if state["too_large"]:
                if msg["type"] == "http.response.start" and not state["replaced"]:
                    state["replaced"] = True
                    await send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})
                return
            await send(msg)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["too_large"]:
                raise
            if not state["replaced"]:
                await send_json(send, 413, {"error": f"request body exceeds the limit of {limit} bytes"})
