"""``portraitseg serve`` as a user starts it (issue 11, item 14): a real process, started from a
folder that is not the repository, finds the web app, prints its URL, and says how to fix a
missing onnxruntime-web in its log and on the page.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serve tests need `pip install portraitseg[server]`")
pytest.importorskip("uvicorn", reason="serve tests need `pip install portraitseg[server]`")

from served import WEB, serve  # noqa: E402


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
        assert "bash web/build.sh" in page and "npm install onnxruntime-web" in page
        status, stub = s.get("/vendor/ort.min.mjs")
        assert status == 200 and "web/build.sh" in stub
        # Clients are told the fix, not where the server keeps its files (issue 17, item 13).
        assert str(tmp_path) not in page and str(tmp_path) not in stub
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
