"""Load test for a running ``portraitseg serve``: N requests at concurrency C on loopback.

    portraitseg serve --port 8000 &
    python scripts/load_server.py --url http://127.0.0.1:8000 -n 2000 -c 8

Each request posts the same 640x480 JPEG (a real photo resized, or a synthetic gradient with
``--image`` omitted and no shared data) and asks for the mask PNG. The client is one
keep-alive ``http.client`` connection per thread, so its own cost per request stays small
(it shares the CPU with the server when both run on one machine). Reports req/s and latency
percentiles; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

SHARED = Path(os.environ.get("PORTRAITSEG_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
DEFAULT_IMAGE = SHARED / "data" / "vikram_val" / "images" / "vikram_001.jpg"


def jpeg_640x480(path: Path | None) -> bytes:
    """The request payload: a real photo when available (closer to real traffic), else a
    synthetic one; either way 640x480, quality 90."""
    from PIL import Image

    if path is not None and path.is_file():
        img = Image.open(path).convert("RGB").resize((640, 480), Image.BILINEAR)
    else:
        y, x = np.mgrid[0:480, 0:640]
        arr = np.stack([x * 255 // 640, y * 255 // 480, (x + y) % 256], axis=2).astype(np.uint8)
        img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart(jpeg: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="frame.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + jpeg + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Worker(threading.Thread):
    def __init__(self, host: str, port: int, path: str, body: bytes, ctype: str, counter: list[int],
                 lock: threading.Lock, total: int) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.path, self.body, self.ctype = path, body, ctype
        self.counter, self.lock, self.total = counter, lock, total
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def _next(self) -> bool:
        with self.lock:
            if self.counter[0] >= self.total:
                return False
            self.counter[0] += 1
            return True

    def run(self) -> None:
        headers = {"Content-Type": self.ctype}
        while self._next():
            t0 = time.perf_counter()
            try:
                self.conn.request("POST", self.path, body=self.body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.conn.close()
                continue
            self.latencies.append(time.perf_counter() - t0)
            if resp.status != 200 or not data.startswith(b"\x89PNG"):
                self.errors.append(f"HTTP {resp.status}: {data[:100]!r}")


def run_load(url: str, n: int, c: int, jpeg: bytes, warmup: int) -> dict:
    u = urlparse(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    body, ctype = multipart(jpeg)
    path = "/v1/segment?output=mask&format=png"
    if warmup:  # first requests pay for lazy init (ORT arenas, buffers): not steady state
        run_workers(host, port, path, body, ctype, warmup, min(c, warmup))
    t0 = time.perf_counter()
    workers = run_workers(host, port, path, body, ctype, n, c)
    wall = time.perf_counter() - t0
    lat = np.array([x for w in workers for x in w.latencies]) * 1000.0
    errors = [e for w in workers for e in w.errors]
    return {
        "requests": n, "concurrency": c, "ok": int(lat.size - sum(1 for e in errors if e.startswith("HTTP"))),
        "errors": len(errors), "first_errors": errors[:3], "wall_s": round(wall, 3),
        "req_per_s": round(n / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p90_ms": round(float(np.percentile(lat, 90)), 1) if lat.size else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "max_ms": round(float(lat.max()), 1) if lat.size else None,
        "request_bytes": len(body),
    }


def run_workers(host: str, port: int, path: str, body: bytes, ctype: str, n: int, c: int) -> list[Worker]:
    counter, lock = [0], threading.Lock()
    workers = [Worker(host, port, path, body, ctype, counter, lock, n) for _ in range(c)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)  # bounded: a hung server cannot hang the benchmark forever
    return workers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("-n", "--requests", type=int, default=1000)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to send (resized to 640x480)")
    args = ap.parse_args()
    if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loopback only: this is a local benchmark")  # never load someone else's server
    result = run_load(args.url, args.requests, args.concurrency, jpeg_640x480(args.image), args.warmup)
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
