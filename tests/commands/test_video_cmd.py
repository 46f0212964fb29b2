"""``portraitseg video`` / ``portraitseg webcam`` end to end: outputs, JSON and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portraitseg.cli import main
from portraitseg.testclips import (
    ClipConfig,
    make_clip,
    read_video,
    synthetic_background,
    synthetic_person,
    write_video,
)


@pytest.fixture(scope="module")
def clip_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    photo, mask = synthetic_person(100)
    cfg = ClipConfig(width=256, height=144, fps=24.0, segments=(("still", 6), ("move", 6)))
    clip = make_clip(photo, mask, synthetic_background(160, 300), cfg)
    return write_video(clip.frames, tmp_path_factory.mktemp("clip") / "in.avi", clip.fps)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_video_command_writes_same_fps_and_size_and_json(clip_avi: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out.mp4", tmp_path / "r.json"
    rc = main(["video", str(clip_avi), str(out), "--background", "green", "--quiet", "--json", str(report)])
    assert rc == 0
    frames, fps = read_video(out)
    assert len(frames) == 12 and frames[0].shape == (144, 256, 3) and fps == pytest.approx(24.0)
    data = json.loads(report.read_text())
    assert data["codec"] in ("h264", "mp4v") and data["frames"] == 12 and data["end_to_end_fps"] > 0


def test_video_command_mask_only_and_blur(clip_avi: Path, tmp_path: Path) -> None:
    assert main(["video", str(clip_avi), str(tmp_path / "m.avi"), "--mask-only", "--quiet"]) == 0
    assert main(["video", str(clip_avi), str(tmp_path / "b.avi"), "--background", "blur", "--quiet"]) == 0
    assert len(read_video(tmp_path / "m.avi")[0]) == 12


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["video", "missing.mp4", "out.mp4"], "missing.mp4: no such file"),
        (["video", "{bad}", "out.mp4"], "not a readable video"),
        (["video", "{clip}", "out.xyz"], "output must end in"),
        (["webcam", "99", "--output", "{tmp}/w.avi"], "camera 99: cannot open"),
        (["webcam", "http://127.0.0.1:9/live.mjpg", "--output", "{tmp}/w.avi"], "cannot open stream"),
    ],
)
def test_errors_are_one_line_exit_2(argv, message, clip_avi: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00garbage" * 50)
    argv = [a.format(bad=bad, clip=clip_avi, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith(f"portraitseg {argv[0]}: error:") and message in line


def test_webcam_headless_from_a_file(clip_avi: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "live.avi", tmp_path / "live.json"
    rc = main(["webcam", str(clip_avi), "--output", str(out), "--max-frames", "10", "--json", str(report)])
    assert rc == 0
    stats = json.loads(report.read_text())
    assert stats["captured"] == stats["rendered"] == 10
    assert stats["max_mask_age"] <= stats["max_mask_age_limit"]
    assert len(read_video(out)[0]) == 10


def test_webcam_and_video_write_h264_mp4_when_ffmpeg_exists(clip_avi: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from portraitseg.video.writer import h264_ffmpeg

    if h264_ffmpeg() is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg with libx264 (and ffprobe) not installed: apt-get install -y ffmpeg")
    live, filed = tmp_path / "live.mp4", tmp_path / "file.mp4"
    assert main(["webcam", str(clip_avi), "--output", str(live), "--max-frames", "6", "--fast"]) == 0
    assert main(["video", str(clip_avi), str(filed), "--quiet"]) == 0
    for path, n in ((live, 6), (filed, 12)):
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=codec_name", "-of", "csv=p=0", str(path)],
                               capture_output=True, text=True)
        assert probe.stdout.strip() == "h264", path
        assert len(read_video(path)[0]) == n
