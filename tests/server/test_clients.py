"""Clients that misbehave after their request is in: they stop reading the answer, or the server
is stopped while they do; and one bad multipart body logged per request.

Each test starts its own 127.0.0.1 server, with a web folder holding one large static file (an
answer far larger than the sockets' buffers, which on loopback take a few MB), and stops it.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server tests need `pip install portraitseg[server]`")
pytest.importorskip("uvicorn", reason="server tests need `pip install portraitseg[server]`")
pytest.importorskip("multipart", reason="server tests need python-multipart")

from PIL import Image  # noqa: E402
from served import LiveServer, multipart, serve, wait_until  # noqa: E402

from portraitseg.runtimes import open_model  # noqa: E402
from portraitseg.server import ServerConfig  # noqa: E402

BIG = 24 * 1024 * 1024  # the static file's size


@pytest.fixture(scope="module")
def runtime():
    return open_model("default", backend="onnx", threads=1)


@pytest.fixture(scope="module")
def web(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("web")
    (folder / "index.html").write_text("<html><body>app</body></html>")
    with open(folder / "big.bin", "wb") as f:
        f.truncate(BIG)  # zeros: nothing compresses on the wire, so all of it must be sent
    return folder


def non_reader(port: int, path: str) -> socket.socket:
    """A client that asks for ``path`` and then reads nothing (a small receive buffer, so the
    server's side fills up at once)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def drain(sock: socket.socket, seconds: float = 10) -> int:
    """Bytes the client can still read before the server's close (EOF or reset)."""
    sock.settimeout(seconds)
    got = 0
    with contextlib.suppress(ConnectionError, TimeoutError):
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    return got


def healthz(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@contextlib.contextmanager
def live(runtime, web: Path, **cfg) -> Iterator[LiveServer]:
    with LiveServer(ServerConfig(worker_threads=1, web_dir=web, **cfg), runtime) as server:
        yield server


def test_clients_that_never_read_cannot_lock_the_server_out(runtime, web: Path) -> None:
    """Before: every connection stayed busy for good and every later client got 503."""
    with live(runtime, web, max_connections=2, send_timeout_s=1.0) as server:
        stalled = [non_reader(server.port, "/big.bin") for _ in range(2)]
        try:
            wait_until(lambda: len(server.guard.open) == 2 and not server.guard.waiting, 10,
                       "both answers started")
            assert healthz(server.port) == 503  # all connections busy: the cap holds...
            # ...until the send timeout closes the clients that take nothing.
            wait_until(lambda: not server.guard.open, 10, "the non-readers to be closed")
            assert healthz(server.port) == 200
            for sock in stalled:
                assert drain(sock) < BIG  # cut off, not waiting to be sent the rest
        finally:
            for sock in stalled:
                sock.close()


def test_slow_readers_get_their_whole_answer(runtime, web: Path) -> None:
    """The send timeout is about no progress at all: a client reading 40 kB/s for several
    timeouts (the server's own buffer does not shrink all that while: the kernel's queue takes
    from it only once megabytes are free) keeps its connection and gets every byte."""
    with live(runtime, web, send_timeout_s=1.0) as server:
        sock = non_reader(server.port, "/big.bin")
        try:
            got = 0
            end = time.monotonic() + 4
            while time.monotonic() < end:  # slow: 4 kB every 0.1 s
                time.sleep(0.1)
                chunk = sock.recv(4096)
                assert chunk, f"closed after {got} of {BIG} bytes"
                got += len(chunk)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            while chunk := sock.recv(1 << 20):  # then the rest at full speed
                got += len(chunk)
                if got >= BIG:
                    break
            assert got > BIG  # the body and its head
        finally:
            sock.close()


def composite_request(port: int) -> tuple[socket.socket, int]:
    """A non-reading client of a composite PNG ~20x its 1.4 MB upload (a flat photo over an
    upscaled noise background); returns the socket and the answer's Content-Length."""
    rng = np.random.default_rng(0)
    parts = {"image": (encoded(Image.new("RGB", (2400, 2400), (30, 200, 40))), "image/jpeg"),
             "background_image": (encoded(Image.fromarray(rng.integers(0, 255, (1000, 1000, 3), np.uint8))),
                                  "image/jpeg")}
    body, ctype = multipart(parts)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"POST /v1/segment?output=composite&format=png HTTP/1.1\r\nHost: x\r\n"
                 f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    lines = head.lower().split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
    return sock, length


def encoded(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=60)
    return buf.getvalue()


def test_unread_finished_answers_are_dropped(runtime, web: Path) -> None:
    """A finished answer waits whole in the connection's buffer. Before: six clients that never
    read a 58 MB composite kept 356 MB of the server's memory, for as long as they stayed, and
    could still read all of it later."""
    with live(runtime, web, send_timeout_s=0.5, header_timeout_s=0.5) as server:
        sock, length = composite_request(server.port)
        try:
            assert length > 8_000_000  # far more than the sockets' buffers take
            time.sleep(3)  # the header timeout (idle once answered) and a few send-timeout ticks
            assert not server.guard.open
            assert drain(sock) < length  # before: all of it, kept for the client all that while
        finally:
            sock.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_is_bounded_and_quiet_with_a_non_reader(tmp_path: Path, web: Path, sig: int) -> None:
    """Before: with one client not reading a large answer, SIGTERM or Ctrl-C never finished
    (uvicorn waits for every connection to close, without a bound); with the bound, each request
    it cancels logged a 40-line traceback."""
    with serve(tmp_path, "--web-dir", str(web), "--timeout", "2", "--send-timeout", "600") as s:
        sock = non_reader(s.port, "/big.bin")
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            s.proc.send_signal(sig)
            s.proc.wait(timeout=20)  # before: TimeoutExpired
            assert time.monotonic() - t0 < 15
        finally:
            sock.close()
    log = "\n".join(s.stderr)
    assert "Traceback" not in log and len(s.stderr) <= 4, log[:3000]


def test_a_bad_multipart_body_is_logged_once_per_cause(runtime, web: Path) -> None:
    """python-multipart logs a warning for each malformed body: one line per request, as many
    as a client sends (before: 5 requests, 5 lines)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    names = ["python_multipart.multipart", "multipart.multipart"]
    for name in names:
        logging.getLogger(name).addHandler(handler)
    try:
        with live(runtime, web) as server:
            for _ in range(5):
                reply = server.request("POST", "/v1/segment", b"\x00\xff" * 500,
                                       {"Content-Type": "multipart/form-data; boundary=bnd"})
                assert reply.status == 400 and reply.json()["error"]
    finally:
        for name in names:
            logging.getLogger(name).removeHandler(handler)
    assert len(records) == 1, [r.getMessage() for r in records]


ASTRONAUT = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


def form(*parts: tuple[str, bytes, str | None]) -> tuple[bytes, dict[str, str]]:
    """A multipart body of (name, data, filename or None) parts."""
    out = b""
    for name, data, filename in parts:
        fn = f'; filename="{filename}"' if filename is not None else ""
        head = f'--bnd\r\nContent-Disposition: form-data; name="{name}"{fn}\r\n'
        head += "Content-Type: image/jpeg\r\n\r\n"
        out += head.encode() + data + b"\r\n"
    return out + b"--bnd--\r\n", {"Content-Type": "multipart/form-data; boundary=bnd"}


@pytest.mark.parametrize(("query", "parts", "text"), [
    # Before: a good first image with a broken second got "image is not a readable image"...
    ("", [("image", "photo"), ("image", "junk")], "field 'image' was given 2 times"),
    # ...and two good ones segmented the second, 200.
    ("", [("image", "photo"), ("image", "photo")], "field 'image' was given 2 times"),
    ("?output=composite", [("image", "photo"), ("background_image", "photo"), ("background_image", "photo")],
     "field 'background_image' was given 2 times"),
    ("?output=mask&output=cutout", [("image", "photo")], "query parameter 'output' was given 2 times"),
    ("?format=png&format=jpeg&format=png", [("image", "photo")],
     "query parameter 'format' was given 3 times"),
])
def test_what_is_given_twice_is_400(runtime, web: Path, query: str, parts: list, text: str) -> None:
    photo = ASTRONAUT.read_bytes()
    body, headers = form(*[(name, photo if what == "photo" else b"junk", "x.jpg") for name, what in parts])
    with live(runtime, web) as server:
        reply = server.request("POST", f"/v1/segment{query}", body, headers)
        assert reply.status == 400 and reply.json() == {"error": f"{text}; give it once"}
        ok = server.request("POST", "/v1/segment?output=mask&unknown=1&unknown=2",
                            *form(("image", photo, "x.jpg")))
        assert ok.status == 200  # one of each (unknown keys are ignored, as by any web API)


def test_an_image_without_a_filename_says_it_must_be_a_file(runtime, web: Path) -> None:
    """Before: "image: Value error, Expected UploadFile, received: <class 'str'>"."""
    with live(runtime, web) as server:
        reply = server.request("POST", "/v1/segment", *form(("image", ASTRONAUT.read_bytes(), None)))
        assert reply.status == 400
        assert reply.json()["error"] == ("image: must be a file (a part with a filename, as curl -F "
                                         "'image=@photo.jpg' sends)")


def test_two_content_types_are_400(runtime, web: Path) -> None:
    """Before: the guard checked the last Content-Type (multipart), FastAPI parsed the body as
    the first, and the client was told "image: required field is missing"."""
    body, headers = form(("image", ASTRONAUT.read_bytes(), "x.jpg"))
    with live(runtime, web) as server:
        for first in ("text/plain", "application/x-www-form-urlencoded", headers["Content-Type"]):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                sock.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: {first}\r\n"
                             f"Content-Type: {headers['Content-Type']}\r\nContent-Length: {len(body)}\r\n"
                             "Connection: close\r\n\r\n".encode() + body)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            finally:
                sock.close()
            assert reply.startswith(b"HTTP/1.1 400 "), reply[:200]
            assert reply.endswith(b'{"error": "the Content-Type header was given 2 times; give it once"}')


@pytest.mark.parametrize("close", ["Connection: close\r\n", ""], ids=["close", "keep-alive"])
def test_a_client_that_half_closes_after_its_request_is_answered(runtime, web: Path, close: str) -> None:
    """Before: a client that shut down its sending side after the request (``nc -N``) got no
    answer: the server closed the connection at the client's end of data."""
    body, headers = form(("image", ASTRONAUT.read_bytes(), "x.jpg"))
    with live(runtime, web) as server:
        for request in (f"GET /healthz HTTP/1.1\r\nHost: x\r\n{close}\r\n".encode(),
                        f"POST /v1/segment HTTP/1.1\r\nHost: x\r\n{close}Content-Type: "
                        f"{headers['Content-Type']}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            try:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := sock.recv(65536):  # ends: the server closes once it has answered
                    reply += chunk
            finally:
                sock.close()
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
            head, content = reply.split(b"\r\n\r\n", 1)
            length = next(int(v) for k, v in (line.split(b":", 1) for line in head.split(b"\r\n")[1:])
                          if k.lower() == b"content-length")
            assert len(content) == length
        # Two requests sent at once, then the half-close: both answered.
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        finally:
            sock.close()
        assert reply.count(b"HTTP/1.1 200 ") == 2 and reply.count(b'"status":"ok"') == 2, reply
        wait_until(lambda: not server.guard.open, 10, "the half-closed connections to be closed")


def test_answers_not_yet_taken_hold_their_slot(runtime, web: Path) -> None:
    """Before: once processed, a request let go of its concurrency slot with its whole answer
    still in the connection's buffer, so any number of slow readers each kept a 13 MB answer in
    the server's memory (here 3 at max_concurrency 2, all 200). Now an answer holds its slot
    until the client has it: memory is bounded by --max-concurrency answers."""
    with live(runtime, web, max_concurrency=2, send_timeout_s=3.0) as server:
        readers = []
        try:
            for _ in range(2):
                sock, length = composite_request(server.port)
                readers.append(sock)
            assert length > 8_000_000
            assert server.request("GET", "/healthz").json()["in_flight"] == 2  # before: 0
            busy = server.segment(ASTRONAUT.read_bytes())
            assert busy.status == 503 and "too many requests in flight" in busy.json()["error"]
            total = drain(readers[0])  # the first client reads its answer after all: all of it
            assert total == length
            wait_until(lambda: server.request("GET", "/healthz").json()["in_flight"] == 0, 20,
                       "the stalled reader's slot to be given back (send timeout)")
            assert server.segment(ASTRONAUT.read_bytes()).status == 200
        finally:
            for sock in readers:
                sock.close()
