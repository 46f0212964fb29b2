"""Video output: H.264 MP4 through an ffmpeg pipe, OpenCV's writer as the stated fallback.

Why ffmpeg and not OpenCV or PyAV: the pip OpenCV wheels' FFmpeg has no H.264 encoder, so
``cv2.VideoWriter`` can only write MPEG-4 Part 2 (``mp4v``) into .mp4, which browsers and many
players do not play. The ffmpeg command line (``apt-get install ffmpeg``; CI installs it
already, and ``video`` uses it for the audio copy) has libx264 and adds no Python dependency.
PyAV (``av`` on PyPI) would be another binary dependency (its current 19.x needs Python >= 3.12)
for an encoder we already get from the tool the audio copy needs. Frames go to ffmpeg's stdin
as raw yuv420p made here (:func:`rgb_to_i420`: half the bytes of RGB, and 1 ms instead of
ffmpeg's 2 ms for the same conversion); x264 encodes in ffmpeg's own process.

When ffmpeg (or its libx264) is missing, or the frame size is odd (yuv420p, the pixel format
browsers play, needs even sizes), .mp4/.m4v/.mov fall back to ``mp4v`` with one warning line
on stderr saying why. .avi/.mkv are Motion-JPEG through OpenCV, as before.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..defaults import MAX_THREADS
from ..options import Bounds, check_options, option
from .io import codec_for, opencv_quiet

H264_EXTS = (".mp4", ".m4v", ".mov")
MIN_SIDE = 2  # pixels: the encoders cannot write a frame 1 pixel wide or high
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                "veryslow")


@dataclass(frozen=True)
class EncoderConfig:
    """x264 settings of H.264 outputs (``video``, ``webcam --output``). Defaults measured in
    docs/video.md: at CRF 20 every preset from ultrafast to veryfast gives the same picture
    (PSNR within 0.1 dB of the rendered frames) and ultrafast costs less than half the CPU of
    veryfast; what the slower presets buy is a smaller file (about 3x), so ``--preset veryfast``
    is the choice when size matters more than speed. One x264 thread by default: on a small
    machine the pipeline's own stages use the other core, extra encoder threads only add
    overhead, and a fixed count keeps the output byte-identical from one machine to the next
    (x264's output depends on its thread count)."""

    preset: str = option("ultrafast", "x264 preset: slower ones make smaller files at the same quality",
                         choices=X264_PRESETS)
    crf: float = option(20.0, "x264 constant rate factor: lower = better quality, bigger file",
                        metavar="CRF", bounds=Bounds(high=51))
    # At most x264's own limit (X264_THREAD_MAX): 100000 ran for a minute on a 15-frame clip.
    encoder_threads: int = option(1, "x264 threads", metavar="N",  # MAX_THREADS is x264's X264_THREAD_MAX too
                                  bounds=Bounds(low=1, high=MAX_THREADS))

    def __post_init__(self) -> None:
        check_options(self)
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset must be one of {', '.join(X264_PRESETS)}; got {self.preset!r}")

    def x264_args(self) -> list[str]:
        return ["-c:v", "libx264", "-preset", self.preset, "-crf", f"{self.crf:g}",
                "-threads", str(self.encoder_threads), "-pix_fmt", "yuv420p", "-movflags", "+faststart"]


def rgb_to_i420(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """RGB (H, W, 3) or grey (H, W) uint8 -> planar yuv420p (3H/2, W): BT.601 limited range,
    as ffmpeg reads raw yuv420p. Even sizes only.

    OpenCV's own RGB->I420 takes each 2x2 block's chroma from its top-left pixel (aliasing:
    -1 dB PSNR on our composites); the chroma here is the block's average instead (its 2x area
    shrink, exact and fast), converted with the same BT.601 limited-range matrix.
    """
    h, w = frame.shape[:2]
    scale = 224.0 / 255.0
    if frame.ndim == 2:  # grey (mask videos): no chroma
        out = np.empty((h * 3 // 2, w), np.uint8) if out is None else out
        cv2.convertScaleAbs(frame, dst=out[:h], alpha=219.0 / 255.0, beta=16.0)
        out[h:] = 128
        return out
    out = cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420, dst=out)  # Y is right; U, V replaced below
    half = cv2.resize(frame, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    # Full-range JPEG YCrCb -> the limited range of the Y plane: C' = 128 + (C - 128) * 224/255.
    ycrcb = cv2.cvtColor(half, cv2.COLOR_RGB2YCrCb)
    planes = out[h:].reshape(2, h // 2, w // 2)  # U then V, each contiguous
    for plane, channel in ((planes[0], 2), (planes[1], 1)):
        cv2.convertScaleAbs(cv2.extractChannel(ycrcb, channel), dst=plane, alpha=scale,
                            beta=128.0 * (1.0 - scale))
    return out


class WriteError(OSError):
    """Writing an output failed (disk full, read-only folder, the encoder died): the commands
    report it as one line and exit 1. An ``OSError``, so the file system's own errors raised
    while writing take the same path."""


class FrameWriter(Protocol):
    """What the video pipelines write to: RGB (H, W, 3) or grey (H, W) uint8 frames (each
    writer converts to what its encoder takes), then ``release`` (finish the file;
    raises :class:`WriteError` when the encoder failed) or ``abort`` (stop at once, the file is
    to be deleted)."""

    codec: str
    cpu_s: float  # an encoder process's CPU seconds, once released (0: it encodes in-process)

    def write(self, frame: np.ndarray) -> None: ...

    def release(self) -> None: ...

    def abort(self) -> None: ...


@functools.lru_cache(maxsize=8)
def _has_libx264(ffmpeg: str) -> bool:
    """Whether this ffmpeg binary can encode H.264 (cached per binary path)."""
    try:
        out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and " libx264 " in out.stdout


def h264_ffmpeg() -> str | None:
    """The ffmpeg on PATH when it has libx264, else None."""
    ffmpeg = shutil.which("ffmpeg")
    return ffmpeg if ffmpeg is not None and _has_libx264(ffmpeg) else None


def _widen_pipe(pipe: object, frame_bytes: int) -> None:
    """Let the pipe hold a whole frame where Linux allows it (up to pipe-max-size, 1 MiB by
    default): with the default 64 KiB, a 720p frame crosses in ~22 writer/reader wake-ups."""
    import fcntl

    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), setpipe, frame_bytes)  # type: ignore[attr-defined]
    except OSError:  # above pipe-max-size for an unprivileged user: try the usual maximum
        try:
            fcntl.fcntl(pipe.fileno(), setpipe, min(frame_bytes, 1 << 20))  # type: ignore[attr-defined]
        except OSError:
            pass


class FFmpegWriter:
    """Frames piped as raw yuv420p into ``ffmpeg ... -c:v libx264`` writing ``path``."""

    codec = "h264"

    def __init__(self, ffmpeg: str, path: Path, fps: float, size: tuple[int, int],
                 name: str | None = None, encoder: EncoderConfig | None = None) -> None:
        w, h = size
        self.path = path
        self.name = name or str(path)  # the file errors name (the final output, not the temp)
        self.encoder = encoder or EncoderConfig()
        self.cpu_s = 0.0  # ffmpeg's CPU time (user + system), known once release() has waited
        self._err = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block ffmpeg
        cmd = [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}",
               "-r", f"{fps:.6g}", "-i", "-", "-an", *self.encoder.x264_args(), str(path)]
        # Its own session: a Ctrl-C in the terminal goes to the whole foreground process group,
        # and ffmpeg would stop at once (the run then failed with "ffmpeg stopped"); the first
        # Ctrl-C is ours to handle: stop reading, close the pipe, let ffmpeg finish the file.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err,
                                      start_new_session=True)
        _widen_pipe(self._proc.stdin, w * h * 3 // 2)
        self._shape = (h, w)
        self._yuv = np.empty((h * 3 // 2, w), np.uint8)  # reused: one writer thread

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self._shape:
            raise ValueError(f"{self.name}: frame of shape {frame.shape}; the video is {self._shape}")
        yuv = rgb_to_i420(np.ascontiguousarray(frame, np.uint8), self._yuv)
        try:
            self._proc.stdin.write(yuv.data)
        except (BrokenPipeError, ValueError):  # ValueError: stdin already closed by abort()
            raise WriteError(f"{self.name}: ffmpeg stopped: {self._error() or 'no message'}") from None

    def _wait(self) -> int:
        """Wait for ffmpeg and keep its CPU time (the encoder's share of a run's cost)."""
        _, status, usage = os.wait4(self._proc.pid, 0)
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        return self._proc.returncode

    def release(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self._wait()
        error = self._error()
        self._err.close()
        # ffmpeg 5 exits 0 after "Error writing trailer ...: No space left on device"; with
        # "-v error" anything it printed is an error, so that fails the file too.
        if code != 0 or error:
            raise WriteError(f"{self.name}: ffmpeg failed to encode H.264 (exit {code}): "
                             f"{error or 'no message'}")

    def abort(self) -> None:
        """Kill ffmpeg instead of waiting for it to finish a file that will be deleted (a
        writer blocked on the pipe then gets a broken pipe and returns)."""
        self._proc.kill()
        self._proc.wait()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
        self._err.close()

    def _error(self) -> str:
        """ffmpeg's last error line that says why ("Error initializing output stream 0:0 --"
        ends with an empty reason: the line before has it); "" when it printed nothing."""
        if self._err.closed:  # after abort()
            return ""
        self._err.seek(0)
        lines = [line.strip() for line in self._err.read().decode(errors="replace").splitlines()]
        reasons = [line for line in lines if line and not line.endswith("--")]
        return reasons[-1] if reasons else next((line for line in reversed(lines) if line), "")


class OpenCVWriter:
    """``cv2.VideoWriter`` with the codec that follows the extension (mp4v or MJPG)."""

    cpu_s = 0.0  # encodes in this process: its CPU is in the encode stage's

    def __init__(self, path: Path, fps: float, size: tuple[int, int], name: str | None = None) -> None:
        self.codec = codec_for(path)
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.codec), fps, size)
        if not self._writer.isOpened():
            raise WriteError(f"{name or path}: OpenCV cannot write {self.codec} video here")
        if size[0] % 2 or size[1] % 2:  # OpenCV's FFmpeg writer drops the odd last column/row
            print(f"warning: {name or path}: {size[0]}x{size[1]} frames are written as "
                  f"{size[0] // 2 * 2}x{size[1] // 2 * 2} (OpenCV's encoders take even sizes only)",
                  file=sys.stderr)

    def write(self, frame: np.ndarray) -> None:
        code = cv2.COLOR_GRAY2BGR if frame.ndim == 2 else cv2.COLOR_RGB2BGR
        with opencv_quiet():  # no error reported, a warning line per frame: VideoOutput reads the file back
            self._writer.write(cv2.cvtColor(frame, code))

    def release(self) -> None:
        self._writer.release()

    def abort(self) -> None:
        self._writer.release()


def fallback_reason(path: Path, size: tuple[int, int]) -> str | None:
    """Why ``path`` cannot be H.264 here (None: it can, or its extension is not an MP4 one)."""
    if path.suffix.lower() not in H264_EXTS:
        return None
    if h264_ffmpeg() is None:
        return "ffmpeg with libx264 not found (apt-get install ffmpeg)"
    if size[0] % 2 or size[1] % 2:
        return f"the frame size {size[0]}x{size[1]} is odd (H.264 yuv420p needs even sizes)"
    return None


def open_writer(path: str | Path, fps: float, size: tuple[int, int], name: str | None = None,
                encoder: EncoderConfig | None = None) -> FrameWriter:
    """A writer for ``path`` (``size`` = (width, height)): H.264 for .mp4/.m4v/.mov when ffmpeg
    can (x264 set by ``encoder``), else OpenCV (mp4v, with a warning line on stderr; MJPG for
    .avi/.mkv). ``name`` is the file named in the warning (the final output when ``path`` is a
    temp file)."""
    path = Path(path)
    codec_for(path)  # the extension check: one clear error for .xyz
    if min(size) < MIN_SIDE:  # OpenCV's writer fails to open, which read as "cannot write here"
        raise ValueError(f"{name or path}: {size[0]}x{size[1]} frames are too small to encode (video needs "
                         f"at least {MIN_SIDE}x{MIN_SIDE})")
    reason = fallback_reason(path, size)
    if path.suffix.lower() in H264_EXTS and reason is None:
        return FFmpegWriter(h264_ffmpeg() or "ffmpeg", path, fps, size, name, encoder)
    if reason is not None:
        print(f"warning: {name or path}: writing mp4v (MPEG-4 Part 2, which browsers do not play) because "
              f"{reason}", file=sys.stderr)
    return OpenCVWriter(path, fps, size, name)
