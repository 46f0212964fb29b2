"""Abuse scenarios against a fresh ``portraitseg serve`` on 127.0.0.1 (issue 17): numbers for
RSS and request latency before/after the server hardening.

    python scripts/server_abuse.py [SCENARIO ...]      # default: all

Each scenario starts its own server (``--port 0``, loopback only), sends a bounded number of
requests for a bounded time, prints one result line and stops the server. Scenarios:

- ``scanbomb``: two uploads of a 5,000-scan progressive JPEG (4096x4096, ~230 KB), then
  640x480 requests for 20 s: their statuses and latencies, and whether the worker still burns
  CPU after the answers.
- ``idle``: 1,100 silent sockets against a server limited to 1,024 open files: /healthz latency
  and the size of its log after 15 s.
- ``stalled``: 100 uploads of 9.5 MB that stop 1 byte short: peak RSS.
- ``big``: eight 25 MP JPEGs (2 threads), RSS peak and 10 s after.
- ``zeros``: four zero-filled 5000x5000 PNGs at once (4 threads): RSS after.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "server"))
ASTRONAUT = REPO / "src" / "portraitseg" / "assets" / "astronaut.jpg"


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serve(*flags: str, nofile: int | None = None) -> Iterator[Server]:
    log = Path(tempfile.mkstemp(prefix="server_abuse.", suffix=".log")[1])
    cmd = [sys.executable, "-m", "portraitseg", "serve", "--port", "0", *flags]

    def limits() -> None:
        os.nice(10)
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=limits,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)/", line).group(1))
        server = Server(proc, port, log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if get(server, "/healthz")[0] == 200:
                    break
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


def get(server: Server, path: str, timeout: float = 10) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t
    finally:
        conn.close()


def multipart(data: bytes, ctype: str = "image/jpeg") -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    head = (f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode()
    return head + data + f"\r\n--{b}--\r\n".encode(), f"multipart/form-data; boundary={b}"


def segment(server: Server, data: bytes, ctype: str = "image/jpeg", query: str = "",
            timeout: float = 120) -> tuple[int, float]:
    body, content_type = multipart(data, ctype)
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/segment" + query, body, {"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t
    except (OSError, http.client.HTTPException):
        return 0, time.perf_counter() - t
    finally:
        conn.close()


def photo(width: int, height: int, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(ASTRONAUT).convert("RGB").resize((width, height)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


# --------------------------------------------------------------------------- scenarios


def scanbomb() -> str:
    from hostile import scan_bomb_jpeg

    bomb, small = scan_bomb_jpeg(5000), photo(640, 480)
    with serve() as s:
        cpu0 = s.cpu_s()
        pool = ThreadPoolExecutor(2)
        bombs = [pool.submit(segment, s, bomb) for _ in range(2)]
        statuses, lat = [], []
        end = time.monotonic() + 20
        while time.monotonic() < end:
            st, dt = segment(s, small, timeout=40)
            statuses.append(st)
            lat.append(dt)
        answers = [f.result() for f in bombs]
        time.sleep(5)  # the answers are in: is the server still decoding?
        cpu_a = s.cpu_s()
        time.sleep(5)
        busy = (s.cpu_s() - cpu_a) / 5
        pool.shutdown()
    ok = statuses.count(200)
    return (f"scanbomb: bomb answers {[(a, round(t, 1)) for a, t in answers]}; 640x480 during 20 s: {ok}/"
            f"{len(statuses)} ok, other statuses {sorted(set(statuses) - {200})}, p50 {pct(lat, 50):.0f} ms, "
            f"max {max(lat) * 1000:.0f} ms; server CPU 5-10 s after the answers: {busy:.0%} "
            f"(total {cpu_a - cpu0:.1f} s)")


def idle() -> str:
    with serve(nofile=1024) as s:
        socks: list[socket.socket] = []
        with contextlib.suppress(OSError):
            for _ in range(1100):
                socks.append(socket.create_connection(("127.0.0.1", s.port), timeout=5))
        time.sleep(1)
        results = []
        for _ in range(5):
            try:
                results.append(get(s, "/healthz", timeout=3))
            except OSError as exc:
                results.append((type(exc).__name__, 3.0))
            time.sleep(2)
        time.sleep(max(0.0, 15 - 10))
        closed = 0
        for sock in socks:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
            sock.close()
        log_kb = s.log.stat().st_size / 1024
    return (f"idle: {len(socks)} silent sockets; /healthz {[(r[0], round(r[1] * 1000)) for r in results]} "
            f"(status, ms); closed by the server after 15 s: {closed}; log {log_kb:.0f} KB")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def stalled() -> str:
    data = os.urandom(int(9.5 * 1024 * 1024))
    body, ctype = multipart(data)
    with serve() as s:
        rss0, peak = s.rss_mb(), 0.0
        socks = []
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
            sock.sendall(f"POST /v1/segment HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode())
            socks.append(sock)
            threading.Thread(target=_send_quietly, args=(sock, body[:-1]), daemon=True).start()
            peak = max(peak, s.rss_mb())
        until = time.monotonic() + 8
        while time.monotonic() < until:
            peak = max(peak, s.rss_mb())
            time.sleep(0.2)
        t, st = time.perf_counter(), get(s, "/healthz")[0]
        hz = time.perf_counter() - t
        for sock in socks:
            sock.close()
    return (f"stalled: RSS {rss0:.0f} -> peak {peak:.0f} MB with 100 stalled 9.5 MB uploads; "
            f"/healthz {st} in {hz * 1000:.0f} ms")


def big() -> str:
    data = photo(5000, 5000, 85)
    with serve() as s:
        rss0, peak = s.rss_mb(), 0.0
        with ThreadPoolExecutor(8) as pool:
            futs = [pool.submit(segment, s, data) for _ in range(8)]
            while not all(f.done() for f in futs):
                peak = max(peak, s.rss_mb())
                time.sleep(0.2)
        res = [f.result() for f in futs]
        after = s.rss_mb()
        time.sleep(10)
        idle_rss = s.rss_mb()
    return (f"big: eight 25 MP JPEGs ({len(data) / 1e6:.1f} MB) {sorted(r[0] for r in res)} in "
            f"{max(r[1] for r in res):.1f} s; RSS {rss0:.0f} -> peak {peak:.0f} -> {after:.0f} after -> "
            f"{idle_rss:.0f} MB 10 s idle")


def zeros() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (5000, 5000)).save(buf, "PNG")
    data = buf.getvalue()
    with serve("--workers-threads", "4") as s:
        rss0, peak = s.rss_mb(), 0.0
        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(segment, s, data, "image/png") for _ in range(4)]
            while not all(f.done() for f in futs):
                peak = max(peak, s.rss_mb())
                time.sleep(0.2)
        res = [f.result() for f in futs]
        time.sleep(5)
        after = s.rss_mb()
    return (f"zeros: four zero 5000x5000 PNGs, 4 threads: {sorted(r[0] for r in res)} in "
            f"{max(r[1] for r in res):.1f} s; RSS {rss0:.0f} -> peak {peak:.0f} -> {after:.0f} MB 5 s after")


SCENARIOS = {"scanbomb": scanbomb, "idle": idle, "stalled": stalled, "big": big, "zeros": zeros}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    names = parser.parse_args().scenario or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    for name in names:
        print(SCENARIOS[name](), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
