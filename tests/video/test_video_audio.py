"""Audio is carried over from input to output when ffmpeg is on PATH."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


@pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="ffmpeg/ffprobe not installed: audio copy not testable")
def test_video_keeps_audio(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x128:rate=10",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440",
            "-t",
            "1",
            "-c:v",
            "mpeg4",
            "-c:a",
            "aac",
            str(src),
        ],
        check=True,
    )
    out = tmp_path / "out.mp4"
    res = subprocess.run(
        [sys.executable, "-m", "portraitseg", "video", str(src), str(out), "--background", "blur"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    streams = subprocess.run(
        [FFPROBE, "-loglevel", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(streams) == ["audio", "video"]


@pytest.mark.skipif(not FFMPEG, reason="ffmpeg not installed")
def test_video_without_audio_says_so(tmp_path: Path) -> None:
    src = tmp_path / "silent.mp4"
    subprocess.run([FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=160x128:rate=10",
                    "-t", "1", "-c:v", "mpeg4", str(src)], check=True)
    out = tmp_path / "out.mp4"
    res = subprocess.run([sys.executable, "-m", "portraitseg", "video", str(src), str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = res.stdout + res.stderr
    assert "audio none (the input has no audio track)" in text and "audio copied" not in text
    assert out.is_file() and not list(tmp_path.glob(".*"))
