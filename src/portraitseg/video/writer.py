"""Video output: H.264 MP4 through an ffmpeg pipe, OpenCV's writer as the stated fallback.

Why ffmpeg and not OpenCV or PyAV: the pip OpenCV wheels' FFmpeg has no H.264 encoder, so
``cv2.VideoWriter`` can only write MPEG-4 Part 2 (``mp4v``) into .mp4, which browsers and many
players do not play. The ffmpeg command line (``apt-get install ffmpeg``; CI installs it
already, and ``video`` uses it for the audio copy) has libx264 and adds no Python dependency.
PyAV (``av`` on PyPI) would be another binary dependency (its current 19.x needs Python >= 3.12)
for an encoder we already get from the tool the audio copy needs. Frames go to ffmpeg's stdin
as raw BGR24; ffmpeg encodes in its own process, so the pipeline's encode stage only copies
bytes.

When ffmpeg (or its libx264) is missing, or the frame size is odd (yuv420p, the pixel format
browsers play, needs even sizes), .mp4/.m4v/.mov fall back to ``mp4v`` with one warning line
on stderr saying why. .avi/.mkv are Motion-JPEG through OpenCV, as before.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .io import codec_for

H264_EXTS = (".mp4", ".m4v", ".mov")
H264_ARGS = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
             "-movflags", "+faststart")


class WriteError(OSError):
    """Writing an output failed (disk full, read-only folder, the encoder died): the commands
    report it as one line and exit 1. An ``OSError``, so the file system's own errors raised
    while writing take the same path."""


class FrameWriter(Protocol):
    """What the video pipelines write to: BGR uint8 frames, then ``release`` (finish the file;
    raises :class:`WriteError` when the encoder failed) or ``abort`` (stop at once, the file is
    to be deleted)."""

    codec: str

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


class FFmpegWriter:
    """Raw BGR frames piped into ``ffmpeg ... -c:v libx264`` writing ``path``."""

    codec = "h264"

    def __init__(self, ffmpeg: str, path: Path, fps: float, size: tuple[int, int],
                 name: str | None = None) -> None:
        w, h = size
        self.path = path
        self.name = name or str(path)  # the file errors name (the final output, not the temp)
        self._err = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block ffmpeg
        cmd = [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}",
               "-r", f"{fps:.6g}", "-i", "-", "-an", *H264_ARGS, str(path)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err)
        self._shape = (h, w, 3)

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != self._shape:
            raise ValueError(f"{self.name}: frame of shape {frame.shape}; the video is {self._shape}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
        except (BrokenPipeError, ValueError):  # ValueError: stdin already closed by abort()
            raise WriteError(f"{self.name}: ffmpeg stopped: {self._error() or 'no message'}") from None

    def release(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self._proc.wait()
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
        self._writer.write(frame)  # never reports an error: VideoOutput reads the file back

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


def open_writer(path: str | Path, fps: float, size: tuple[int, int], name: str | None = None) -> FrameWriter:
    """A writer for ``path`` (``size`` = (width, height)): H.264 for .mp4/.m4v/.mov when ffmpeg
    can, else OpenCV (mp4v, with a warning line on stderr; MJPG for .avi/.mkv). ``name`` is the
    file named in the warning (the final output when ``path`` is a temp file)."""
    path = Path(path)
    codec_for(path)  # the extension check: one clear error for .xyz
    reason = fallback_reason(path, size)
    if path.suffix.lower() in H264_EXTS and reason is None:
        return FFmpegWriter(h264_ffmpeg() or "ffmpeg", path, fps, size, name)
    if reason is not None:
        print(f"warning: {name or path}: writing mp4v (MPEG-4 Part 2, which browsers do not play) because "
              f"{reason}", file=sys.stderr)
    return OpenCVWriter(path, fps, size, name)
