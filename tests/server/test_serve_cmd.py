"""``portraitseg serve`` as a user starts it (issue 11, item 14): a real process, started from a
folder that is not the repository, finds the web app, prints its URL, and says how to fix a
missing onnxruntime-web in its log and on the page.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serve tests need `pip install portraitseg[server]`")
pytest.importorskip("uvicorn", reason="serve tests need `pip install portraitseg[server]`")

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "web"
START_S = 90.0  # bound on start-up (model load on a loaded 2-core machine)


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    port: int
    stderr: list[str]

    def get(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", errors="replace")
        finally:
            conn.close()


def _pump(stream, out: queue.Queue) -> None:
    for line in stream:
        out.put(line.rstrip("\n"))
    out.put(None)


@contextlib.contextmanager
def serve(cwd: Path, *flags: str) -> Iterator[Served]:
    """``python -m portraitseg serve --port 0 ...`` in ``cwd``; yields once it printed its URL."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "portraitseg", "serve", "--port", "0", "--workers-threads", "1", *flags]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def _web_copy(tmp_path: Path, vendor: bool) -> Path:
    web = tmp_path / "web"
    shutil.copytree(WEB, web, ignore=shutil.ignore_patterns("vendor", "node_modules"))
    if vendor:
        (web / "vendor").mkdir()
        (web / "vendor" / "ort.min.mjs").write_text("export const fake = 1;\n")
    return web


def test_serve_from_any_folder_serves_the_repo_web_app(tmp_path: Path) -> None:
    with serve(tmp_path) as s:  # cwd has no web/: the app is found from the package
        status, page = s.get("/")
        assert status == 200 and "app.js" in page and "<title>portraitseg</title>" in page
        assert s.get("/app.js")[0] == 200 and s.get("/model.onnx")[0] == 200
        vendored = (WEB / "vendor" / "ort.min.mjs").is_file()
        assert ("web/build.sh" in page) is not vendored  # the fix is shown only when needed
    assert s.url.startswith("http://127.0.0.1:")


def test_missing_runtime_is_said_in_the_log_and_on_the_page(tmp_path: Path) -> None:
    web = _web_copy(tmp_path, vendor=False)
    with serve(tmp_path, "--web-dir", str(web)) as s:
        status, page = s.get("/")
        assert status == 200 and 'id="runtime-missing"' in page and "app.js" in page
        assert f"bash {web / 'build.sh'}" in page and "npm install onnxruntime-web" in page
        status, stub = s.get("/vendor/ort.min.mjs")
        assert status == 200 and "build.sh" in stub
    log = [line for line in s.stderr if "onnxruntime-web is missing" in line]
    assert len(log) == 1 and f"bash {web / 'build.sh'}" in log[0], s.stderr


def test_vendored_runtime_means_no_notice(tmp_path: Path) -> None:
    web = _web_copy(tmp_path, vendor=True)
    with serve(tmp_path, "--web-dir", str(web)) as s:
        status, page = s.get("/")
        assert status == 200 and "runtime-missing" not in page
        assert s.get("/vendor/ort.min.mjs") == (200, "export const fake = 1;\n")
    assert not [line for line in s.stderr if "onnxruntime-web is missing" in line]


def test_runtime_from_an_installed_npm_package(tmp_path: Path) -> None:
    from portraitseg.server.webapp import locate_runtime

    web = _web_copy(tmp_path, vendor=False)
    assert locate_runtime(web) is None or not str(locate_runtime(web)).startswith(str(tmp_path))
    dist = tmp_path / "node_modules" / "onnxruntime-web" / "dist"  # `npm install onnxruntime-web` beside web/
    dist.mkdir(parents=True)
    (dist / "ort.min.mjs").write_text("export const npm = 1;\n")
    assert locate_runtime(web) == dist
    with serve(tmp_path, "--web-dir", str(web)) as s:
        assert s.get("/vendor/ort.min.mjs") == (200, "export const npm = 1;\n")
        assert "runtime-missing" not in s.get("/")[1]


def test_bad_web_dir_is_one_line_error(tmp_path: Path, capsys) -> None:
    from portraitseg.cli import main

    assert main(["serve", "--port", "0", "--web-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no index.html there" in err[0]


def test_pip_install_folder_is_a_candidate(tmp_path: Path, monkeypatch) -> None:
    """A non-editable ``pip install .`` copies no web/: the folder it ran in (pip's
    direct_url.json, PEP 610) is where serve looks then."""
    from portraitseg import locate
    from portraitseg.server import webapp

    monkeypatch.setattr(locate, "installed_from", lambda: tmp_path)
    assert tmp_path / "web" in webapp.candidate_web_dirs()
    installed = tmp_path / "site-packages" / "portraitseg" / "locate.py"
    monkeypatch.setattr(locate, "__file__", str(installed))
    assert webapp.locate_web_dir() is None  # neither a checkout nor a web/ where pip ran
    _web_copy(tmp_path, vendor=False)
    assert webapp.locate_web_dir() == (tmp_path / "web").resolve()
