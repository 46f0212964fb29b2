"""``portraitseg video`` against hostile inputs and flags (issue: hostile-user probe): damaged and
truncated files, FFmpeg's own stderr noise, an audio track shorter than the video, a real
terminal Ctrl-C (SIGINT to the whole process group), absurd thread counts, 1-pixel frames, a
long-strip background image, a folder or device as IN.

Every input is a real crafted file (ffmpeg-made or byte-edited); the Ctrl-C is a real signal.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_video import FakeRuntime  # tests/video is on sys.path (rootdir import mode)

from portraitseg import postprocess as pp
from portraitseg.cli import main
from portraitseg.testclips import write_video
from portraitseg.video import VideoConfig, process_file
from portraitseg.video.output import part_path
from portraitseg.video.writer import h264_ffmpeg, open_writer

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg not installed")
needs_h264 = pytest.mark.skipif(h264_ffmpeg() is None, reason="ffmpeg with libx264 not installed")


def _quiet(**kw) -> VideoConfig:
    return VideoConfig(progress=False, copy_audio=False, **kw)


def _cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command in a child process: FFmpeg's messages go to file descriptor 2, which
    capsys does not see."""
    return subprocess.run([sys.executable, "-m", "portraitseg", *argv], capture_output=True, text=True,
                          timeout=timeout)


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def _frame_count(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


@pytest.fixture
def damaged_avi(tmp_path: Path) -> Path:
    """20 MJPG frames (frame i is grey 8 i) whose frames 8, 9 and 10 do not decode (their
    Huffman tables overwritten): OpenCV's read() fails on each of them."""
    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(20)]
    data = bytearray(write_video(frames, tmp_path / "clean.avi", 10.0).read_bytes())

    def markers(code: int) -> list[int]:
        return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == code]

    starts, tables = markers(0xD8), markers(0xC4)
    for k in (8, 9, 10):
        table = next(t for t in tables if t > starts[k])
        data[table + 4 : table + 30] = b"\xff" * 26
    path = tmp_path / "damaged.avi"
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------- damaged inputs


def test_damaged_frames_are_skipped_in_time_and_reported(damaged_avi: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.avi"
    res = process_file(damaged_avi, out, _quiet(effect="none"), runtime=FakeRuntime())
    # Before: the run ended at frame 8 (read() failed) and said nothing: 8 frames, exit 0.
    assert res.frames_in == 17 and res.frames_unreadable == 3 and res.frames_listed == 20
    assert res.frames == 20 and _frame_count(out) == 20  # the damaged frames' time is kept
    written = cv2.VideoCapture(str(out))
    shown = [int(written.read()[1][0, 0, 0]) for _ in range(12)]
    assert abs(shown[7] - 56) <= 3 and shown[8:11] == [shown[7]] * 3 and abs(shown[11] - 88) <= 3
    assert not res.resampled
    assert res.input_damage() == ("damaged or truncated video: 3 of its 20 frames could not be decoded; "
                                  "the output holds the 17 that could")


def test_the_command_keeps_the_output_of_a_damaged_input_and_exits_1(damaged_avi: Path, tmp_path: Path,
                                                                       capsys) -> None:
    out = tmp_path / "o.avi"
    assert main(["video", str(damaged_avi), str(out), "--quiet", "--mask-only"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"portraitseg video: error: {damaged_avi}: damaged or truncated video: 3 of its 20 "
                       "frames could not be decoded; the output holds the 17 that could")
    assert _frame_count(out) == 20


def test_webcam_reads_a_damaged_file_to_its_end_and_exits_1(damaged_avi: Path, tmp_path: Path,
                                                             capsys) -> None:
    out = tmp_path / "w.avi"
    # Before: the first damaged frame ended the run: 8 frames written, exit 0, nothing said.
    assert main(["webcam", str(damaged_avi), "--output", str(out), "--fast", "--mask-only"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"portraitseg webcam: error: {damaged_avi}: damaged or truncated video: 3 frames could not be "
        "decoded; the output holds the 17 that could")
    assert _frame_count(out) == 17


@needs_h264
def test_a_truncated_mp4_is_reported(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"  # index first (faststart): the cut file still opens
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=15", "-t", "2", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    res = process_file(cut, tmp_path / "o.mp4", _quiet(), runtime=FakeRuntime())
    assert res.frames_listed == 30 and 0 < res.frames_in < 27
    missing = 30 - res.frames_in
    assert res.input_damage() == (f"damaged or truncated video: {missing} of its 30 frames could not be "
                                  f"decoded; the output holds the {res.frames_in} that could")


@needs_ffmpeg
def test_ffmpegs_own_messages_stay_off_stderr(damaged_avi: Path, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    done = _cli("video", str(text), str(tmp_path / "o.mp4"), "--quiet")
    # Before: "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x...] moov atom not found" came first.
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"portraitseg video: error: {text}: not a readable video"]
    done = _cli("video", str(damaged_avi), str(tmp_path / "o.avi"), "--quiet", "--mask-only")
    noise = [line for line in done.stderr.splitlines() if "@ 0x" in line]  # "[mjpeg @ 0x...] ..."
    assert done.returncode == 1 and not noise, done.stderr


def test_a_folder_or_device_as_input_is_named_as_such(tmp_path: Path, capsys) -> None:
    assert main(["video", str(tmp_path), str(tmp_path / "o.avi")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"portraitseg video: error: {tmp_path}: is a folder, not a video file"
    assert main(["video", "/dev/null", str(tmp_path / "o.avi")]) == 2
    assert capsys.readouterr().err.strip() == ("portraitseg video: error: /dev/null: is a device, pipe or "
                                               "socket, not a video file")


# --------------------------------------------------------------------------- audio


@needs_h264
def test_an_audio_track_shorter_than_the_video_keeps_every_frame(tmp_path: Path) -> None:
    src = tmp_path / "short_audio.mp4"  # 1.5 s of video, 0.5 s of sound (the sound just stops)
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=16", "-f", "lavfi", "-i", "sine=duration=0.5",
            "-t", "1.5", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(src))
    out = tmp_path / "o.mp4"
    # Before: -shortest cut the video at 0.5 s and the read-back failed: "... incomplete (frame 24
    # of 24 cannot be read back; disk full?)", exit 1, no output.
    res = process_file(src, out, VideoConfig(progress=False), runtime=FakeRuntime())
    assert res.audio == "copied" and res.frames == 24 and _frame_count(out) == 24


# --------------------------------------------------------------------------- a terminal's Ctrl-C


@needs_h264
def test_ctrl_c_in_a_terminal_keeps_the_frames_done_so_far(tmp_path: Path) -> None:
    src = tmp_path / "long.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-t", "20", "-c:v", "libx264",
            "-preset", "ultrafast", str(src))
    out = tmp_path / "o.mp4"
    # A terminal sends SIGINT to the whole foreground process group, ffmpeg included: before,
    # ffmpeg stopped at once and the run failed ("ffmpeg failed to encode H.264 (exit 255)", exit 1,
    # no file).
    proc = subprocess.Popen([sys.executable, "-m", "portraitseg", "video", str(src), str(out), "--quiet"],
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    part = part_path(out, proc.pid)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and (
            not part.exists() or part.stat().st_size < 20_000):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted: kept the frames written so far"
    assert 0 < _frame_count(out) < 600 and not part.exists()


# --------------------------------------------------------------------------- flags and sizes


@pytest.mark.parametrize("flag", ["--threads", "--encoder-threads"])
def test_absurd_thread_counts_are_refused_in_one_line(flag: str, tmp_path: Path, capsys) -> None:
    # Before: --threads 100000 ended in "RuntimeError: can't start new thread" (a traceback);
    # --encoder-threads 100000 took a minute for 15 frames.
    with pytest.raises(SystemExit) as stop:
        main(["video", "in.avi", str(tmp_path / "o.avi"), flag, "100000"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"portraitseg video: error: argument {flag}: must be in [1, 128]; got 100000")


@pytest.mark.parametrize("size", [(1, 50), (50, 1)])
def test_one_pixel_frames_are_refused_as_too_small(size: tuple[int, int], tmp_path: Path) -> None:
    # Before: "OpenCV cannot write MJPG video here", as if the folder were the problem.
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]} frames are too small to encode"):
        open_writer(tmp_path / "o.avi", 10.0, size)
    assert list(tmp_path.iterdir()) == []


def test_a_long_strip_background_is_fitted_without_a_huge_copy() -> None:
    strip = np.tile(np.arange(2000, dtype=np.uint8)[None, :, None], (1, 1, 3))
    tracemalloc.start()
    try:
        fitted = pp.resize_cover(strip, (120, 160))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Before: the whole strip was scaled 120x first (120 x 240000 x 3 bytes = 86 MB); a 60 KB
    # 1x20000 PNG behind a 720p video asked for 31 GB.
    assert fitted.shape == (120, 160, 3) and peak < 5_000_000, peak
    centre = int(strip[0, 1000, 0])
    assert abs(int(fitted[60, 80, 0]) - centre) <= 2  # the centre of the strip, as before


def test_a_truncated_mkv_on_a_full_disk_is_not_published(tmp_path: Path, mount_tmpfs, capfd) -> None:
    from portraitseg.video.writer import WriteError

    rng = np.random.default_rng(0)  # noise: about 50 KB a frame in MJPG, 1.5 MB in all
    src = write_video([rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(30)],
                      tmp_path / "noise.avi", 10.0)
    full = mount_tmpfs("full", "size=256k")
    # Before: the read-back seek past the end of the cut MKV silently returned frame 0, so the
    # run published a 256 KB file of 4 frames as "30 frames", exit 0, after a "[ WARN:...] write
    # FFmpeg: Failed to write frame" line per frame.
    with pytest.raises(WriteError, match="written video is incomplete"):
        process_file(src, full / "o.mkv", _quiet(effect="none"), runtime=FakeRuntime())
    assert list(full.iterdir()) == []
    assert "Failed to write frame" not in capfd.readouterr().err


def test_ctrl_c_never_replaces_an_earlier_output(tmp_path: Path) -> None:
    src = write_video([np.full((48, 64, 3), 8 * i, np.uint8) for i in range(20)], tmp_path / "in.avi", 10.0)
    out = tmp_path / "o.avi"
    earlier = process_file(src, out, _quiet(), runtime=FakeRuntime())
    before = out.read_bytes()

    def ctrl_c_at_5(i: int, frame: np.ndarray) -> None:
        if i == 5:
            raise KeyboardInterrupt

    # Before: the 5 frames done replaced the complete earlier file (--overwrite lets a run start).
    res = process_file(src, out, _quiet(), runtime=FakeRuntime(), on_frame=ctrl_c_at_5)
    assert res.interrupted and not res.published and earlier.frames == 20
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.avi", "o.avi"]
    fresh = tmp_path / "fresh.avi"  # nothing there before: the cut file is kept, as documented
    res = process_file(src, fresh, _quiet(), runtime=FakeRuntime(), on_frame=ctrl_c_at_5)
    assert res.interrupted and res.published and 0 < _frame_count(fresh) < 20


def test_ctrl_c_keeps_the_earlier_alpha_frames_with_the_earlier_output(tmp_path: Path) -> None:
    src = write_video([np.full((48, 64, 3), 8 * i, np.uint8) for i in range(12)], tmp_path / "in.avi", 10.0)
    alpha = tmp_path / "frames"
    process_file(src, tmp_path / "o.avi", _quiet(alpha_dir=alpha), runtime=FakeRuntime())
    earlier = {p.name: p.read_bytes() for p in alpha.iterdir()}

    def ctrl_c_at_4(i: int, frame: np.ndarray) -> None:
        if i == 4:
            raise KeyboardInterrupt

    other = write_video([np.full((48, 64, 3), 200, np.uint8)] * 12, tmp_path / "other.avi", 10.0)
    res = process_file(other, tmp_path / "o.avi", _quiet(alpha_dir=alpha), runtime=FakeRuntime(),
                       on_frame=ctrl_c_at_4)
    # Before: frames 0..3 of the cut run replaced the earlier ones in place (then 4..11 were
    # deleted by the command): a mix of two runs beside an OUT that was not replaced.
    assert not res.published and len(earlier) == 12
    assert {p.name: p.read_bytes() for p in alpha.iterdir()} == earlier  # no staging folder left either
    res = process_file(src, tmp_path / "o.avi", _quiet(alpha_dir=alpha, effect="none"), runtime=FakeRuntime())
    assert res.published and sorted(p.name for p in alpha.iterdir()) == sorted(earlier)


def test_a_later_run_removes_the_alpha_staging_folder_of_a_killed_run(tmp_path: Path) -> None:
    src = write_video([np.full((48, 64, 3), 100, np.uint8)] * 4, tmp_path / "in.avi", 10.0)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process id that no longer runs, like a run killed with kill -9
    alpha = tmp_path / "frames"
    stale = alpha / f".part{gone.pid}"
    stale.mkdir(parents=True)
    (stale / "frame_000000.png").write_bytes(b"half")
    process_file(src, tmp_path / "o.avi", _quiet(alpha_dir=alpha), runtime=FakeRuntime())
    assert sorted(p.name for p in alpha.iterdir()) == [f"frame_{i:06d}.png" for i in range(4)]


def test_a_read_only_alpha_folder_is_refused_before_decoding(tmp_path: Path, mount_tmpfs) -> None:
    from portraitseg.video.writer import WriteError

    ro = mount_tmpfs("ro", "size=1m,ro")
    # IN does not exist: the check must come before decoding to be reached at all. Before: the
    # folder was made only after decoding the first frame and opening the model (and with the
    # staging folder the error named the hidden ".part<PID>").
    message = rf"^--alpha {ro}/frames: cannot write there: Read-only file system$"
    with pytest.raises(WriteError, match=message):
        process_file(tmp_path / "missing.avi", tmp_path / "o.avi", _quiet(alpha_dir=ro / "frames"),
                     runtime=FakeRuntime())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]
    with pytest.raises(FileNotFoundError):  # a new --alpha folder is not left behind by a bad IN
        process_file(tmp_path / "missing.avi", tmp_path / "o.avi", _quiet(alpha_dir=tmp_path / "f"),
                     runtime=FakeRuntime())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"]


@pytest.mark.parametrize(("argv", "message"), [
    (["video", "--bench", "--bench-frames", "0"], "argument --bench-frames: must be at least 1, got 0"),
    (["webcam", "in.avi", "--output", "w.avi", "--max-frames", "0"],
     "argument --max-frames: must be >= 1; got 0"),
])
def test_zero_frame_counts_are_refused_in_one_line(argv: list[str], message: str, capsys) -> None:
    # Before: --bench-frames 0 ended in "IndexError: list index out of range" (a traceback);
    # --max-frames 0 ran, wrote nothing and failed at the end.
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"portraitseg {argv[0]}: error: {message}"
