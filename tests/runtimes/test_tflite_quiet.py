"""LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." (issue 18): printed by its
C++ runtime to fd 2 on every command; dropped now, while everything else written to stderr meanwhile
still comes through."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("ai_edge_litert", reason="the 'tflite' extra (LiteRT) is not installed")

from portraitseg.runtimes.factory import DEFAULT_TFLITE  # noqa: E402
from portraitseg.runtimes.tflite import DELEGATE_INFO, TFLiteRuntime, stderr_without  # noqa: E402

ASSET = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


def test_predict_with_tflite_prints_no_delegate_notice(tmp_path: Path) -> None:
    # A fresh process: LiteRT prints the notice once per process, at the first interpreter.
    run = subprocess.run(
        [sys.executable, "-m", "portraitseg", "predict", str(ASSET), "-o", str(tmp_path / "out"),
         "--backend", "tflite", "--threads", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "astronaut.mask.png").is_file()
    assert "XNNPACK" not in run.stderr
    assert "1 image(s) done" in run.stderr  # the command's own stderr is untouched


def test_only_the_notice_is_dropped(capfd: pytest.CaptureFixture[str]) -> None:
    with stderr_without(DELEGATE_INFO):
        os.write(2, b"ERROR: a real problem\n")
        os.write(2, DELEGATE_INFO + b"\n")
        os.write(2, b"partial line without newline")
    os.write(2, b"\nafter\n")
    assert capfd.readouterr().err == "ERROR: a real problem\npartial line without newline\nafter\n"


def test_interpreters_made_in_threads_leave_stderr_working(capfd: pytest.CaptureFixture[str]) -> None:
    runtime = TFLiteRuntime(DEFAULT_TFLITE, threads=1)
    errors: list[BaseException] = []

    def make() -> None:
        try:
            for _ in range(3):
                runtime.for_thread()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    os.write(2, b"stderr still here\n")
    assert "stderr still here" in capfd.readouterr().err
