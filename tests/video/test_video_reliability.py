"""Video outputs under failure (issue 17): a full disk, a read-only folder, an encoder that dies,
a killed run's temp file; and a variable-frame-rate input kept in sync with its audio.

Each fault is real: a small tmpfs (mounted by the ``mount_tmpfs`` fixture), a killed ffmpeg or
``portraitseg video`` process, an ffmpeg-made VFR clip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_video import FakeRuntime  # tests/video is on sys.path (rootdir import mode)

from portraitseg.testclips import write_video
from portraitseg.video import VideoConfig, process_file
from portraitseg.video.output import part_path
from portraitseg.video.writer import WriteError, h264_ffmpeg

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
needs_h264 = pytest.mark.skipif(h264_ffmpeg() is None, reason="ffmpeg with libx264 not installed")
needs_ffprobe = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="ffmpeg/ffprobe not installed")


def _quiet(**kw) -> VideoConfig:
    return VideoConfig(progress=False, copy_audio=False, **kw)


@pytest.fixture(scope="module")
def noise_avi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 frames of noise: encodes to far more than 64 KB in any codec."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 160, 3), dtype=np.uint8) for _ in range(24)]
    return write_video(frames, tmp_path_factory.mktemp("noise") / "noise.avi", 24.0)


def _fill(folder: Path, leave_bytes: int = 0) -> None:
    """Fill the file system of ``folder`` until ``leave_bytes`` are free."""
    stat = os.statvfs(folder)
    try:
        (folder / "filler").write_bytes(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))
    except OSError:
        pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


def _run_bounded(fn, limit_s: float) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it is still running after ``limit_s`` (the bug:
    the pipeline waited forever on a dead encoder). Returns what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert not worker.is_alive(), f"still running after {limit_s} s"
    return raised[0] if raised else None


# --------------------------------------------------------------------------- full disk


@pytest.mark.parametrize("ext", [".avi", pytest.param(".mp4", marks=needs_h264)])
def test_full_disk_raises_and_leaves_no_output(ext: str, noise_avi: Path, mount_tmpfs) -> None:
    full = mount_tmpfs("full", "size=64k")
    out = full / f"o{ext}"
    exc = _run_bounded(lambda: process_file(noise_avi, out, _quiet(), runtime=FakeRuntime()), 60)
    assert isinstance(exc, WriteError) and str(exc).startswith(str(out)), exc
    assert _leftovers(full) == []  # no OUT (the 0-byte / truncated file) and no temp file


def test_full_disk_during_alpha_frames_fails_and_leaves_no_frames(noise_avi: Path, tmp_path: Path,
                                                                  mount_tmpfs) -> None:
    full = mount_tmpfs("full", "size=256k")
    alpha, out = full / "frames", tmp_path / "o.avi"
    cfg = _quiet(alpha_dir=alpha)
    exc = _run_bounded(lambda: process_file(noise_avi, out, cfg, runtime=FakeRuntime()), 60)
    assert isinstance(exc, WriteError) and "No space left on device" in str(exc), exc
    assert str(exc).startswith(str(alpha / "frame_"))  # the final name, not the staging folder's
    # All or none, like OUT: the frames written before the disk filled are not left behind as a
    # result (they used to be), nor the staging folder, nor the folder this run made.
    assert not alpha.exists()
    assert not out.exists() and _leftovers(tmp_path) == ["full"]


@pytest.mark.parametrize("ext", [".avi", pytest.param(".mp4", marks=needs_h264)])
def test_webcam_on_a_full_disk_exits_1_and_leaves_no_file(ext: str, noise_avi: Path, mount_tmpfs,
                                                         capsys) -> None:
    from portraitseg.cli import main

    full = mount_tmpfs("full", "size=64k")
    _fill(full, leave_bytes=4096)  # one block: the blurred frames compress to ~6 KB (mp4), 14 KB (avi)
    out = full / f"w{ext}"
    assert main(["webcam", str(noise_avi), "--output", str(out), "--fast"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"portraitseg webcam: error: {out}: "), errors
    assert _leftovers(full) == []  # the unplayable file used to stay under the final name


@needs_h264
def test_encoder_killed_mid_run_ends_the_run_within_seconds(noise_avi: Path, tmp_path: Path) -> None:
    """The ffmpeg encoder process dies at frame 5: the run raises WriteError promptly (it used
    to wait forever at 0% CPU) and deletes its temp file."""
    killed: list[float] = []

    def kill_encoder(i: int, frame: np.ndarray) -> None:
        if i == 5:
            for pid in _children(os.getpid(), "ffmpeg"):
                os.kill(pid, signal.SIGKILL)
                killed.append(time.perf_counter())
        time.sleep(0.02)

    out = tmp_path / "o.mp4"
    exc = _run_bounded(lambda: process_file(noise_avi, out, _quiet(), runtime=FakeRuntime(),
                                            on_frame=kill_encoder), 60)
    assert killed, "no ffmpeg child found"
    assert time.perf_counter() - killed[0] < 10
    assert isinstance(exc, WriteError) and "ffmpeg" in str(exc), exc
    assert _leftovers(tmp_path) == []


_STUCK_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_video import FakeRuntime
from test_video_reliability import _children
from portraitseg.video import VideoConfig, process_file

def stop_encoder_then_ctrl_c(i, frame):
    if i == 6:  # ffmpeg stops reading (SIGSTOP): the encoder blocks on the full pipe
        pids = _children(os.getpid(), "ffmpeg")
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        print("stuck", *pids, flush=True)
        raise KeyboardInterrupt  # the first Ctrl-C: finish the frames done so far...

try:
    process_file({src!r}, {out!r}, VideoConfig(progress=False, copy_audio=False), runtime=FakeRuntime(),
                 on_frame=stop_encoder_then_ctrl_c)
except KeyboardInterrupt:
    sys.exit(130)
"""


@needs_h264
def test_second_ctrl_c_stops_a_run_whose_encoder_is_stuck(noise_avi: Path, tmp_path: Path) -> None:
    """After the first Ctrl-C the run waits for the encoder to take the frames done so far; when
    ffmpeg is stuck, the second Ctrl-C must end the run at once, kill ffmpeg and keep nothing."""
    out = tmp_path / "o.mp4"
    code = _STUCK_RUN.format(tests=str(Path(__file__).parent), src=str(noise_avi), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["stuck"] and len(line) == 2, proc.stderr.read() if proc.stderr else ""
        ffmpeg = Path(f"/proc/{line[1]}")
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting for the stopped encoder
        proc.send_signal(signal.SIGINT)
        t0 = time.perf_counter()
        proc.wait(timeout=30)
        assert time.perf_counter() - t0 < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, proc.stderr.read() if proc.stderr else ""
    assert _leftovers(tmp_path) == []
    # ffmpeg was killed, not left stopped behind (gone, or a zombie until its new parent reaps it)
    assert not ffmpeg.exists() or ffmpeg.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _children(ppid: int, name: str) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid and comm == name:
            pids.append(int(stat.parent.name))
    return pids


@needs_h264
def test_full_disk_at_ffmpeg_start_ends_the_cli_with_one_line_exit_1(noise_avi: Path, mount_tmpfs) -> None:
    full = mount_tmpfs("full", "size=64k")
    _fill(full)
    out = full / "o.mp4"
    done = subprocess.run([sys.executable, "-m", "portraitseg", "video", str(noise_avi), str(out), "--quiet"],
                          capture_output=True, text=True, timeout=180)
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert done.returncode == 1, done.stderr
    assert errors == [f"portraitseg video: error: {out}: ffmpeg stopped: Could not write header for output "
                      "file #0 (incorrect codec parameters ?): No space left on device"], done.stderr
    assert "Traceback" not in done.stderr and _leftovers(full) == []


def test_read_only_folder_is_refused_before_the_first_frame_is_decoded(tmp_path: Path, mount_tmpfs,
                                                                      capsys) -> None:
    from portraitseg.cli import main

    ro = mount_tmpfs("ro", "size=1m,ro")
    # IN does not exist: the writability check must come first to be reached at all.
    with pytest.raises(WriteError, match="Read-only file system"):
        process_file(tmp_path / "missing.avi", ro / "o.mp4", _quiet(), runtime=FakeRuntime())
    clip = write_video([np.zeros((48, 64, 3), np.uint8)] * 3, tmp_path / "in.avi", 10.0)
    assert main(["video", str(clip), str(ro / "o.mp4"), "--quiet"]) == 2  # refused before any work
    err = capsys.readouterr().err.strip().splitlines()
    out = ro / "o.mp4"
    assert err == [f"portraitseg video: error: OUT {out}: cannot write in {ro}: Read-only file system"]


# --------------------------------------------------------------------------- killed runs


def _start_video(src: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    """``portraitseg video`` in a child process, returned once its temp file exists."""
    proc = subprocess.Popen([sys.executable, "-m", "portraitseg", "video", str(src), str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    part = part_path(out, proc.pid)
    deadline = time.monotonic() + 120
    while not part.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert part.exists(), f"no temp file appeared (exit {proc.poll()})"
    return proc, part


def test_a_later_run_removes_the_temp_file_of_a_killed_run(noise_avi: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.avi"
    proc, part = _start_video(noise_avi, out)
    proc.kill()  # kill -9: no clean-up possible
    proc.wait()
    assert part.exists()
    alive = part_path(out, os.getppid())  # a temp file of a live process is left alone
    alive.touch()
    process_file(noise_avi, out, _quiet(), runtime=FakeRuntime())
    assert not part.exists() and alive.exists() and out.is_file()


def test_sigterm_removes_the_temp_file(noise_avi: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.avi"
    proc, part = _start_video(noise_avi, out)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143, proc.stderr.read() if proc.stderr else ""
    assert not part.exists() and not out.exists()


# --------------------------------------------------------------------------- variable frame rate


def _vfr_clip(path: Path) -> Path:
    """15 frames at 10 fps, then 45 at 30 fps (3 s), frame N showing N in binary (8 columns of
    8 px, white = 1: survives lossy encoding), with a 3 s tone: a real variable-frame-rate MP4
    with audio."""
    pts = "if(lt(N\\,15)\\,N*0.1\\,1.5+(N-15)/30)/TB"
    bits = "255*mod(floor(N/pow(2\\,floor(X/8)))\\,2)"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=black:s=64x48:r=30:d=2,format=gray,geq=lum='{bits}',setpts='{pts}'",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=3", "-fps_mode", "passthrough",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
                   check=True)
    return path


def _frame_times(path: Path) -> np.ndarray:
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return np.array([float(t.strip(",")) for t in out.split()])


def _frame_number(frame: np.ndarray) -> int:
    bits = frame[:, :64].reshape(frame.shape[0], 8, 8, -1).mean(axis=(0, 2, 3)) > 128
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _decoded(path: Path) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(path)), []
    while (frame := cap.read()[1]) is not None:
        frames.append(frame)
    return frames


def _streams(path: Path) -> list[str]:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout
    return sorted(out.split())


@needs_h264
@needs_ffprobe
def test_variable_frame_rate_input_stays_in_sync_with_its_audio(tmp_path: Path) -> None:
    src = _vfr_clip(tmp_path / "vfr.mp4")
    t_in = _frame_times(src)
    assert len(t_in) == 60 and np.ptp(np.diff(t_in)) > 0.05  # really variable
    out = tmp_path / "out.mp4"
    res = process_file(src, out, VideoConfig(progress=False, effect="none"), runtime=FakeRuntime())
    assert res.audio == "copied" and _streams(out) == ["audio", "video"]
    t_out = _frame_times(out)
    shown = [_frame_number(f) for f in _decoded(out)]  # which input frame each output frame shows
    assert len(shown) == len(t_out) == res.frames and res.frames_in == 60
    period = 1.0 / res.fps
    ends = np.append(t_in[1:], t_in[-1] + period)
    # The output frame at time t must show the input frame that is on screen at t (to half a
    # frame): before the fix frame 30 was 0.6 s late against the audio.
    drift = [max(t_in[j] - t, t - ends[j], 0.0) for t, j in zip(t_out, shown)]
    assert max(drift) <= period / 2 + 1e-3, np.round(drift, 3)
    assert shown[0] == 0 and shown[-1] == 59 and sorted(shown) == shown


def test_constant_frame_rate_input_maps_one_to_one(tmp_path: Path) -> None:
    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(20)]
    src = write_video(frames, tmp_path / "cfr.avi", 25.0)
    res = process_file(src, tmp_path / "o.avi", _quiet(effect="none"), runtime=FakeRuntime())
    assert res.frames == res.frames_in == 20 and not res.resampled


# --------------------------------------------------------------------------- what the result says


@needs_ffprobe
def test_odd_size_result_reports_the_written_size(tmp_path: Path) -> None:
    src = tmp_path / "odd.avi"  # made by ffmpeg: OpenCV cannot write odd sizes
    subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=65x49:rate=10", "-t", "0.4",
                    "-c:v", "mjpeg", str(src)], check=True)
    res = process_file(src, tmp_path / "o.avi", _quiet(), runtime=FakeRuntime())
    written = cv2.VideoCapture(str(tmp_path / "o.avi"))
    size = (int(written.get(cv2.CAP_PROP_FRAME_WIDTH)), int(written.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    assert res.size == size and res.size_in == (65, 49)
    assert res.to_dict()["size"] == list(size)
