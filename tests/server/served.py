"""Servers for the tests, on 127.0.0.1 only: :func:`serve` runs a real ``portraitseg serve``
process (started from any folder, waited for until it answers ``/healthz``, stopped afterwards,
its stderr kept for assertions); :class:`LiveServer` runs ``create_app`` under uvicorn in a
thread of the test process, configured exactly as ``serve`` configures it."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import queue
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import uvicorn
from PIL import Image

from portraitseg.server import ServerConfig, create_app
from portraitseg.server.connections import uvicorn_config

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
START_S = 90.0  # bound on start-up (model load on a loaded 2-core machine)


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    port: int
    stderr: list[str]

    def get(self, path: str, timeout: float = 60) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", errors="replace")
        finally:
            conn.close()


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``condition()`` until true (the machine may be loaded: no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _pump(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


def _limit_open_files(nofile: int | None):
    def apply() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return apply


@contextlib.contextmanager
def serve(cwd: Path, *flags: str, nofile: int | None = None) -> Iterator[Served]:
    """``python -m portraitseg serve --port 0 ...`` in ``cwd``; yields once it printed its URL.
    ``nofile``: the process's open-file limit (soft and hard), as on a host with ``ulimit -n``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "portraitseg", "serve", "--port", "0", "--workers-threads", "1", *flags]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_limit_open_files(nofile))
    out: queue.Queue = queue.Queue()
    err: queue.Queue = queue.Queue()
    for stream, q in ((proc.stdout, out), (proc.stderr, err)):
        threading.Thread(target=_pump, args=(stream, q), daemon=True).start()
    stderr: list[str] = []
    try:
        url = _wait_for_url(out, proc)
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        served = Served(proc, url, port, stderr)
        _until_healthy(served)
        yield served
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        while True:
            try:
                line = err.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            stderr.append(line)


def _wait_for_url(out: queue.Queue, proc: subprocess.Popen) -> str:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=1.0)
        except queue.Empty:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited with {proc.returncode} before printing its URL") from None
            continue
        if line is None:
            raise AssertionError("serve closed stdout before printing its URL")
        m = re.search(r"http://127\.0\.0\.1:\d+/", line)
        if m:
            return m.group(0)
    raise AssertionError("serve printed no URL")


def _until_healthy(served: Served) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            if served.get("/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not answer /healthz")


# --------------------------------------------------------------------------- in-process server


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def image(self) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(self.body)))


class LiveServer:
    """uvicorn serving ``create_app(cfg, runtime)`` on a loopback socket in a daemon thread."""

    def __init__(self, cfg: ServerConfig, runtime) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        # The same uvicorn configuration as `serve` (connection limits included).
        self.app = create_app(cfg, runtime)
        config = uvicorn_config(self.app, cfg, log_level="warning")
        self.guard = config.http.guard  # the connections as the server sees them
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def segment(self, image: bytes, query: str = "", ctype: str = "image/jpeg",
                extra: dict[str, tuple[bytes, str]] | None = None) -> Reply:
        body, content_type = multipart({"image": (image, ctype), **(extra or {})})
        return self.request("POST", f"/v1/segment{query}", body, {"Content-Type": content_type})


def multipart(parts: dict[str, tuple[bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, (data, ctype) in parts.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class SlowRuntime:
    """The real runtime with a sleep per inference: keeps requests in flight on purpose."""

    def __init__(self, runtime, delay_s: float) -> None:
        self._rt, self.delay_s = runtime, delay_s

    def __getattr__(self, name: str):
        return getattr(self._rt, name)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self._rt.infer(tensor)

    def for_thread(self) -> SlowRuntime:
        return self  # each worker thread must get the slow wrapper, not the wrapped runtime


def stalled_upload(port: int, photo: bytes) -> socket.socket:
    """A client that sends the headers and half of a multipart body, then goes quiet."""
    body, ctype = multipart({"image": (photo, "image/jpeg")})
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def read_status(sock: socket.socket) -> int | None:
    """The HTTP status the server answered on ``sock``, or None if it closed without one."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None
