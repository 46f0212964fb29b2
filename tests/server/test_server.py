"""HTTP API tests: a real uvicorn on 127.0.0.1 (random port) in a thread, real photos.

Every bad-input test ends with a good request, so "the server keeps serving" is checked each
time. The slow-model tests wrap the real runtime with a sleep to hold requests in flight.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server tests need `pip install portraitseg[server]`")
uvicorn = pytest.importorskip("uvicorn", reason="server tests need `pip install portraitseg[server]`")
pytest.importorskip("multipart", reason="server tests need python-multipart")

from PIL import Image  # noqa: E402
from served import LiveServer, Reply, SlowRuntime, multipart, read_status, stalled_upload  # noqa: E402, F401

from portraitseg.runtimes import DEFAULT_ONNX, open_model  # noqa: E402
from portraitseg.server import ServerConfig  # noqa: E402

STEMS = ("vikram_001", "vikram_002", "vikram_003")
ASTRONAUT = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


# --------------------------------------------------------------------------- fixtures / helpers


@pytest.fixture(scope="module")
def runtime():
    return open_model("default", backend="onnx", threads=1)


@pytest.fixture(scope="module")
def photos(vikram: Path) -> dict[str, bytes]:
    return {s: (vikram / "images" / f"{s}.jpg").read_bytes() for s in STEMS}


@pytest.fixture(scope="module")
def server(runtime) -> Iterator[LiveServer]:
    cfg = ServerConfig(worker_threads=2, max_concurrency=32, max_body_bytes=2 * 1024 * 1024,
                       max_pixels=4_000_000)
    with LiveServer(cfg, runtime) as live:
        yield live


def dims(jpeg: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image."""
    w, h = Image.open(io.BytesIO(jpeg)).size
    return h, w


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    p, t = pred >= 128, truth >= 128
    return float((p & t).sum() / max(1, (p | t).sum()))


def assert_serving(server: LiveServer, photo: bytes) -> None:
    reply = server.segment(photo)
    assert reply.status == 200, reply.body[:200]
    assert reply.image().shape == dims(photo)


# --------------------------------------------------------------------------- endpoints


def test_healthz(server: LiveServer) -> None:
    reply = server.request("GET", "/healthz")
    assert reply.status == 200
    info = reply.json()
    assert info["status"] == "ok" and info["input_size"] == [224, 224] and info["in_flight"] == 0


def test_docs_and_openapi(server: LiveServer) -> None:
    assert server.request("GET", "/docs").status == 200
    spec = json.loads(server.request("GET", "/openapi.json").body)
    params = {p["name"] for p in spec["paths"]["/v1/segment"]["post"]["parameters"]}
    assert {"output", "background", "format"} <= params


def test_model_onnx_is_the_bundled_file(server: LiveServer) -> None:
    reply = server.request("GET", "/model.onnx")
    assert reply.status == 200 and reply.body == DEFAULT_ONNX.read_bytes()


@pytest.mark.parametrize("stem", STEMS)
def test_mask_matches_truth(server: LiveServer, photos: dict[str, bytes], vikram: Path, stem: str) -> None:
    reply = server.segment(photos[stem], "?output=mask&format=png")
    assert reply.status == 200 and reply.headers["content-type"] == "image/png"
    mask = reply.image()
    truth = np.asarray(Image.open(vikram / "masks" / f"{stem}.png").convert("L"))
    assert mask.shape == truth.shape == dims(photos[stem])
    assert iou(mask, truth) > 0.7


def test_mask_as_jpeg(server: LiveServer, photos: dict[str, bytes]) -> None:
    reply = server.segment(photos["vikram_001"], "?format=jpeg")
    assert reply.status == 200 and reply.headers["content-type"] == "image/jpeg"
    assert reply.image().shape == dims(photos["vikram_001"])


def test_cutout_alpha_is_the_mask(server: LiveServer, photos: dict[str, bytes]) -> None:
    photo = photos["vikram_002"]
    cut = server.segment(photo, "?output=cutout").image()
    mask = server.segment(photo).image()
    assert cut.shape == (*dims(photo), 4)
    assert np.abs(cut[..., 3].astype(int) - mask.astype(int)).max() <= 1


def test_composite_colour(server: LiveServer, photos: dict[str, bytes]) -> None:
    photo = photos["vikram_003"]
    mask = server.segment(photo).image()
    reply = server.segment(photo, "?output=composite&background=%2300ff00&format=png")
    assert reply.status == 200
    out = reply.image().astype(int)
    assert out.shape == (*dims(photo), 3)
    bg = out[mask == 0]
    assert bg.size and np.abs(bg - [0, 255, 0]).max() <= 2  # pure background -> exactly green
    person = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB")).astype(int)[mask == 255]
    assert np.abs(out[mask == 255] - person).mean() < 2  # person pixels unchanged


def test_composite_blur_jpeg_and_background_image(server: LiveServer, photos: dict[str, bytes]) -> None:
    photo = photos["vikram_001"]
    blur = server.segment(photo, "?output=composite")
    assert blur.status == 200 and blur.headers["content-type"] == "image/jpeg"
    assert blur.image().shape == (*dims(photo), 3)
    with_bg = server.segment(photo, "?output=composite&format=png",
                             extra={"background_image": (photos["vikram_002"], "image/jpeg")})
    assert with_bg.status == 200 and with_bg.image().shape == (*dims(photo), 3)
    assert not np.array_equal(with_bg.image(), server.segment(photo, "?output=composite&format=png").image())


# --------------------------------------------------------------------------- bad input


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _png_header(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels and holds none: a decompression bomb's header, made
    without allocating the pixels (the server must refuse it from the header alone)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


BAD_SEGMENT_REQUESTS = {
    # name: (image bytes factory, query, part content type, expected status, error text)
    "corrupt": (lambda p: b"not an image at all" * 10, "", "image/jpeg", 400, "not a readable image"),
    "truncated": (lambda p: p[: len(p) // 3], "", "image/jpeg", 400, "not a readable image"),
    "empty": (lambda p: b"", "", "image/jpeg", 400, "empty"),
    "text part": (lambda p: p, "", "text/plain", 415, "must be an image"),
    "bad output": (lambda p: p, "?output=sketch", "image/jpeg", 400, "output"),
    "bad format": (lambda p: p, "?format=gif", "image/jpeg", 400, "format"),
    "bad background": (lambda p: p, "?output=composite&background=/etc/passwd", "image/jpeg", 400,
                       "background"),
    "url background": (lambda p: p, "?output=composite&background=http://x/y.jpg", "image/jpeg", 400,
                       "background"),
    "cutout as jpeg": (lambda p: p, "?output=cutout&format=jpeg", "image/jpeg", 400, "format=png"),
    "too many pixels": (lambda p: _png(2500, 2000), "", "image/png", 413, "pixels"),
    "bomb header 12k": (lambda p: _png_header(12000, 12000), "", "image/png", 413,
                        "12000x12000 = 144000000 pixels; the limit is 4000000"),
    "bomb header 30k": (lambda p: _png_header(30000, 30000), "", "image/png", 413, "too many pixels"),
}


@pytest.mark.parametrize("name", list(BAD_SEGMENT_REQUESTS))
def test_bad_input(server: LiveServer, photos: dict[str, bytes], name: str) -> None:
    make, query, ctype, status, text = BAD_SEGMENT_REQUESTS[name]
    photo = photos["vikram_001"]
    reply = server.segment(make(photo), query, ctype)
    assert reply.status == status, reply.body[:200]
    assert reply.headers["content-type"] == "application/json"
    assert text in reply.json()["error"]
    assert_serving(server, photo)


def test_wrong_content_type_and_missing_field(server: LiveServer, photos: dict[str, bytes]) -> None:
    reply = server.request("POST", "/v1/segment", b'{"image": "x"}', {"Content-Type": "application/json"})
    assert reply.status == 415 and "multipart/form-data" in reply.json()["error"]
    raw = server.request("POST", "/v1/segment", photos["vikram_001"], {"Content-Type": "image/jpeg"})
    assert raw.status == 415
    body, ctype = multipart({"photo": (photos["vikram_001"], "image/jpeg")})
    missing = server.request("POST", "/v1/segment", body, {"Content-Type": ctype})
    assert missing.status == 400 and "image" in missing.json()["error"]
    assert server.request("GET", "/nope").json() == {"error": "Not Found"}
    assert_serving(server, photos["vikram_001"])


def test_body_too_large_declared_and_streamed(server: LiveServer, photos: dict[str, bytes]) -> None:
    big = b"\xff" * (3 * 1024 * 1024)  # limit in this fixture: 2 MB
    declared = server.segment(big)
    assert declared.status == 413 and "limit" in declared.json()["error"]
    # Chunked upload without Content-Length: caught while streaming.
    body, ctype = multipart({"image": (big, "image/jpeg")})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        conn.request("POST", "/v1/segment", body=chunks, headers={"Content-Type": ctype},
                      encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413 and "limit" in json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert_serving(server, photos["vikram_001"])


# --------------------------------------------------------------------------- concurrency


def test_16_concurrent_requests(server: LiveServer, photos: dict[str, bytes]) -> None:
    expected = {s: server.segment(photos[s]).body for s in STEMS}
    jobs = [STEMS[i % len(STEMS)] for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda s: server.segment(photos[s]), jobs, timeout=120))
    for stem, reply in zip(jobs, replies):
        assert reply.status == 200
        assert reply.body == expected[stem]  # same bytes as a lone request: no cross-talk


def test_503_when_over_concurrency_limit(runtime, photos: dict[str, bytes]) -> None:
    cfg = ServerConfig(worker_threads=2, max_concurrency=2, retry_after_s=3)
    photo = photos["vikram_001"]
    with LiveServer(cfg, SlowRuntime(runtime, 0.5)) as live:
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: live.segment(photo), range(6), timeout=120))
        statuses = sorted(r.status for r in replies)
        assert statuses.count(200) >= 2 and 503 in statuses and set(statuses) <= {200, 503}
        busy = next(r for r in replies if r.status == 503)
        assert busy.headers["retry-after"] == "3" and "busy" in busy.json()["error"]
        assert live.request("GET", "/healthz").json()["in_flight"] == 0  # slots released
        assert_serving(live, photo)


def test_504_on_timeout(runtime, photos: dict[str, bytes]) -> None:
    cfg = ServerConfig(worker_threads=1, timeout_s=0.2)
    with LiveServer(cfg, SlowRuntime(runtime, 1.0)) as live:
        reply = live.segment(photos["vikram_001"])
        assert reply.status == 504 and "longer than" in reply.json()["error"]
        assert live.request("GET", "/healthz").status == 200


def test_serve_command_is_registered() -> None:
    from portraitseg.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "0", "--max-concurrency", "4", "--web-dir", "web"])
    assert args.command == "serve" and args.max_concurrency == 4
    with contextlib.suppress(SystemExit):
        build_parser().parse_args(["serve", "--max-concurrency", "0"])


# --------------------------------------------------------------------------- fuzz corpus (issue 11, item 4)


class _Records(logging.Handler):
    """Collects the server's log records (uvicorn's loggers do not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[_Records]:
    handler, loggers = _Records(), [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn", "portraitseg")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's TIFF reader warns on corrupt tags
def test_fuzz_corpus_gets_4xx_json_never_500(server: LiveServer, server_log: _Records) -> None:
    from fuzz_corpus import FORMATS, corpus, good_samples

    samples = corpus()
    assert len(samples) >= 250 and {s.fmt for s in samples} == set(FORMATS)
    statuses: dict[int, int] = {}
    for s in samples:
        reply = server.segment(s.data, "", f"image/{s.fmt.lower()}")
        statuses[reply.status] = statuses.get(reply.status, 0) + 1
        assert reply.status in (200, 400, 413, 415), (s.name, reply.status, reply.body[:200])
        if reply.status != 200:
            assert reply.headers["content-type"] == "application/json", s.name
            message = reply.json()["error"]
            assert "\n" not in message and ("image" in message or "pixels" in message), (s.name, message)
    assert statuses.get(400, 0) > len(samples) // 2  # most of the corpus is unreadable
    assert not [r.getMessage() for r in server_log.records if r.levelno >= logging.ERROR]
    for good in good_samples():  # and the server keeps serving every format
        reply = server.segment(good.data, "", f"image/{good.fmt.lower()}")
        assert reply.status == 200, (good.name, reply.body[:200])


# --------------------------------------------------------------------------- slow uploads (item 5)


def test_stalled_uploads_hold_no_slot_and_get_408(runtime) -> None:
    photo = ASTRONAUT.read_bytes()
    cfg = ServerConfig(worker_threads=1, max_concurrency=2, body_timeout_s=1.5)
    with LiveServer(cfg, runtime) as live:
        stallers = [stalled_upload(live.port, photo) for _ in range(4)]  # twice the slots
        try:
            for _ in range(3):  # with slots taken at the headers, these would be 503
                assert_serving(live, photo)
            assert live.request("GET", "/healthz").json()["in_flight"] == 0
            for sock in stallers:  # each answered 408 once its body deadline passed
                assert read_status(sock) == 408
        finally:
            for sock in stallers:
                sock.close()
        assert_serving(live, photo)


def test_body_timeout_flag() -> None:
    from portraitseg.cli import build_parser

    args = build_parser().parse_args(["serve", "--body-timeout", "3"])
    assert args.body_timeout == 3.0
    with pytest.raises(ValueError, match="--body-timeout must be a positive number of seconds"):
        ServerConfig(body_timeout_s=0).validate()
