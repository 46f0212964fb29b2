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


# --------------------------------------------------------------------------- outputs vs inputs (issue 17)


def _links(tmp_path: Path, clip: Path) -> Path:
    """A copy of the clip with a symbolic and a hard link to it."""
    import os

    src = tmp_path / "in.avi"
    src.write_bytes(clip.read_bytes())
    (tmp_path / "sym.avi").symlink_to(src)
    os.link(src, tmp_path / "hard.avi")
    return src


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["video", "{src}", "{src}"], "OUT {src} is the input IN ({src}); refusing to overwrite it"),
        (["video", "{src}", "{tmp}/sym.avi", "--overwrite"], "OUT {tmp}/sym.avi is the input IN"),
        (["video", "{src}", "{tmp}/hard.avi", "--overwrite"], "OUT {tmp}/hard.avi is the input IN"),
        (["video", "{src}", "{tmp}/o.avi", "--json", "{src}"], "--json {src} is the input IN"),
        (["video", "{src}", "{tmp}/o.avi", "--json", "{tmp}/o.avi"], "--json {tmp}/o.avi is also OUT"),
        (["video", "{tmp}/sym.avi", "{tmp}/o.avi", "--background", "{tmp}/hard.avi", "--json", "{src}"],
         "--json {src} is the input IN"),
        (["video", "{tmp}/other.avi", "{tmp}/o.avi", "--background", "{src}", "--json", "{tmp}/hard.avi"],
         "--json {tmp}/hard.avi is the input --background"),
        (["video", "{src}", "{tmp}/old.avi"], "OUT {tmp}/old.avi exists (use --overwrite to replace it)"),
        (["video", "{src}", "{tmp}/o.avi", "--alpha", "{tmp}/frames"],
         "--alpha {tmp}/frames already holds 1 frame_*.png (use --overwrite"),
        (["video", "{src}", "{tmp}/o.avi", "--alpha", "{tmp}/o.avi"], "--alpha {tmp}/o.avi is also OUT"),
        (["webcam", "{src}", "--output", "{tmp}/sym.avi", "--overwrite"],
         "--output {tmp}/sym.avi is the input SOURCE"),
        (["webcam", "{src}", "--output", "{tmp}/o.avi", "--json", "{src}"],
         "--json {src} is the input SOURCE"),
        (["webcam", "{src}", "--output", "{tmp}/old.avi"], "--output {tmp}/old.avi exists"),
    ],
)
def test_outputs_never_replace_inputs_or_existing_files(argv, message, clip_avi: Path, tmp_path: Path,
                                                        capsys) -> None:
    src = _links(tmp_path, clip_avi)
    (tmp_path / "other.avi").write_bytes(clip_avi.read_bytes())
    (tmp_path / "old.avi").write_bytes(b"an earlier result")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "frame_000000.png").write_bytes(b"an earlier frame")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    argv = [a.format(src=src, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert line.startswith(f"portraitseg {argv[0]}: error: ")
    assert message.format(src=src, tmp=tmp_path) in line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["frames", "hard.avi", "in.avi", "old.avi", "other.avi", "sym.avi"]


def test_overwrite_replaces_an_earlier_result_and_extra_alpha_frames(clip_avi: Path, tmp_path: Path) -> None:
    out, frames = tmp_path / "o.avi", tmp_path / "frames"
    out.write_bytes(b"an earlier result")
    frames.mkdir()
    for i in (0, 11, 12, 40):  # frames 12 and 40 are from a longer earlier run
        (frames / f"frame_{i:06d}.png").write_bytes(b"old")
    (frames / "notes.txt").write_text("kept")
    assert main(["video", str(clip_avi), str(out), "--alpha", str(frames), "--quiet", "--overwrite"]) == 0
    assert len(read_video(out)[0]) == 12
    names = sorted(p.name for p in frames.iterdir())
    assert names == [f"frame_{i:06d}.png" for i in range(12)] + ["notes.txt"]


# --------------------------------------------------------------------------- what the run reports


def odd_size_clip(path: Path) -> Path:
    """A 65x49 MJPG clip (OpenCV itself cannot write odd sizes: ffmpeg makes it)."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed: apt-get install -y ffmpeg")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=65x49:rate=10",
                    "-t", "0.3", "-c:v", "mjpeg", str(path)], check=True)
    return path


def test_json_goes_to_the_file_only_and_the_summary_tells_the_truth(tmp_path: Path, capsys) -> None:
    src = odd_size_clip(tmp_path / "odd.avi")
    out, report = tmp_path / "o.avi", tmp_path / "r.json"
    assert main(["video", str(src), str(out), "--json", str(report), "--quiet", "--no-audio"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # --json PATH: the numbers go to PATH, not also to stdout
    data = json.loads(report.read_text())
    assert data["audio"] == "not copied (--no-audio)" and data["interrupted"] is False
    assert data["size_in"] == [65, 49] and data["size"] == [64, 48]  # what OpenCV really wrote
    assert f"{out}: 3 frames 65x49 written as 64x48 @ 10.00 fps" in captured.err


def test_help_lists_every_output_format_that_works(capsys) -> None:
    from portraitseg.video.io import CODECS

    with pytest.raises(SystemExit):
        main(["video", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "OUT output video file: " + ", ".join(CODECS) in text
