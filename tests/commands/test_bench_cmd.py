"""``portraitseg bench --json``: an earlier result is kept unless --overwrite, and a --json that
cannot be written is refused before the minutes of timing, as every command's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import portraitseg.bench as bench
from portraitseg.cli import main

QUICK = ["--formats", "onnx", "--peers", "", "--repeats", "1", "--rounds", "1"]


def test_an_earlier_json_is_kept_unless_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    earlier = tmp_path / "bench.json"
    earlier.write_text('{"earlier": "run"}\n')
    timed = []
    real = bench.run_bench
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: timed.append(1) or real(*a, **k))
    assert main(["bench", *QUICK, "--json", str(earlier)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--json {earlier} exists (use --overwrite to replace it)"), err
    assert len(err.splitlines()) == 1 and not timed  # refused before any timing
    assert earlier.read_text() == '{"earlier": "run"}\n'
    assert main(["bench", *QUICK, "--json", str(earlier), "--overwrite"]) == 0
    assert "default/onnx/1" in json.loads(earlier.read_text())


def test_an_unwritable_json_folder_is_refused_before_timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A real read-only mount: one line naming --json and the folder, before any timing (it
    failed only when writing, after the whole run)."""
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("timing started"))
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(["bench", *QUICK, "--json", str(ro / "bench.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"--json {ro / 'bench.json'}: cannot write in {ro}: Read-only file system"), err
        assert len(err.splitlines()) == 1
