"""Video I/O: opening cameras, streams and files, output codecs, looping background videos and
muxing the input's audio back in (ffmpeg)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
# What OpenCV's bundled FFmpeg can always write: mp4v (MPEG-4 Part 2) in MP4/MOV and
# Motion-JPEG in AVI/MKV. H.264 needs an external encoder that pip wheels do not ship: .mp4/.mov
# go through the ffmpeg command line when it is there (writer.py), mp4v is the fallback.
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
MAX_UNREADABLE_RUN = 25  # frames in a row that fail to decode before the input counts as ended


def quiet_ffmpeg_log() -> None:
    """Keep FFmpeg's own errors (inside OpenCV) off stderr for the rest of the process: "moov
    atom not found" for a file that is no video, a line per broken macroblock of a damaged frame
    (dozens), around the one line our commands print instead. The commands call it first thing;
    a library user keeps OpenCV's default. OpenCV reads the variable once, when it first opens
    FFmpeg; a user debugging a file can still set it (48 = everything)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET


class FrameSource(Protocol):
    """What the pipelines read from: ``cv2.VideoCapture``'s ``read``/``release``."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


def codec_for(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in CODECS:
        raise ValueError(f"{path}: output must end in {', '.join(CODECS)} (the codec follows the extension)")
    return CODECS[ext]


@contextmanager
def opencv_quiet() -> Iterator[None]:
    """OpenCV's own log silenced inside the block (process-wide: OpenCV has one level). Its
    warnings repeat what our one line says: a missing device, or "write FFmpeg: Failed to write
    frame" once per frame on a full disk (the output is read back to catch that)."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def quiet_capture(*args: object) -> cv2.VideoCapture:
    """VideoCapture without OpenCV's multi-line warnings for a missing device or stream: the
    caller turns a failure into one clear line."""
    with opencv_quiet():
        return cv2.VideoCapture(*args)


def check_input_file(path: str | Path) -> Path:
    """``path`` when it is a regular file; else ``FileNotFoundError`` (missing) or ``ValueError``
    (a folder or a device: "no such file" would send the user looking in the wrong place)."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    kind = "a folder" if path.is_dir() else "a device, pipe or socket"
    raise ValueError(f"{path}: is {kind}, not a video file")


def open_source(spec: str | int, open_timeout_ms: int = 5000) -> cv2.VideoCapture:
    """A camera index (``0`` or ``"0"``), a stream URL or a video file -> an opened capture.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line) otherwise.
    """
    text = str(spec)
    if text.isdigit():
        cap = quiet_capture(int(text))
        if not cap.isOpened():
            raise ValueError(f"camera {text}: cannot open (no such device, or it is busy)")
        return cap
    if "://" in text:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            open_timeout_ms,
        ]
        cap = quiet_capture(text, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            raise ValueError(f"{text}: cannot open stream (unreachable, or not a video stream)")
        return cap
    path = check_input_file(text)
    cap = quiet_capture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: not a readable video")
    return cap


def read_past_damage(cap: FrameSource, limit: int = MAX_UNREADABLE_RUN
                     ) -> tuple[bool, np.ndarray | None, int]:
    """The next frame that decodes: ``(ok, frame BGR, frames skipped before it)``; ok False at
    the end of the input.

    ``read()`` fails both at the end and at a frame that does not decode (a damaged stretch of
    a file); the read after a damaged frame goes on with the next one, while at the end every
    read fails at once. So up to ``limit`` failed reads in a row are retried: one broken frame
    no longer ends the video there, silently.
    """
    for skipped in range(limit + 1):
        ok, frame = cap.read()
        if ok and frame is not None:
            return True, frame, skipped
    return False, None, 0


class SkipDamaged:
    """A video file as a :class:`FrameSource` that reads past frames that do not decode
    (:func:`read_past_damage`), counting them in ``unreadable``; ``get`` is the capture's."""

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self.cap = cap
        self.unreadable = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, frame, skipped = read_past_damage(self.cap)
        self.unreadable += skipped
        return ok, frame

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def release(self) -> None:
        self.cap.release()


def damage_line(decoded: int, unreadable: int, listed: int = 0) -> str | None:
    """What was wrong with an input, in a few words (None: every frame it lists decoded).
    ``listed``: the container's frame count (0: unknown, or not read to the end); frames missing
    against it (a truncated file) count too, but it is an estimate in some formats: one frame
    short is let pass."""
    missing = max(0, listed - decoded - unreadable)
    bad = unreadable + (missing if missing > max(1, listed // 100) else 0)
    if not bad:
        return None
    of = f" of its {listed}" if listed >= decoded + bad else ""
    frames = "frame" if bad == 1 and not of else "frames"
    return (f"damaged or truncated video: {bad}{of} {frames} could not be decoded; the output holds the "
            f"{decoded} that could")


def open_video(path: str | Path) -> tuple[cv2.VideoCapture, np.ndarray, float]:
    """A video file -> (capture, first frame BGR, fps); the first frame proves it decodes."""
    cap = open_source(str(path))
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise ValueError(f"{path}: not a readable video (no frame could be decoded)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, first, fps if fps and fps > 0 else 30.0


class VideoBackground:
    """A video used as background: frames read in turn, looping at the end."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.cap, first, _ = open_video(self.path)
        self._first = cv2.cvtColor(first, cv2.COLOR_BGR2RGB)
        self._pending: np.ndarray | None = self._first

    def next(self) -> np.ndarray:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        ok, frame, _ = read_past_damage(self.cap)
        if not ok:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
            if not ok:
                return self._first
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


NO_AUDIO = "none (the input has no audio track)"


def has_audio(ffmpeg: str, src: Path) -> bool:
    """Whether ``src`` has an audio stream: ``ffmpeg -i`` lists its streams on stderr (and exits
    non-zero for want of an output), which needs no ffprobe."""
    info = subprocess.run([ffmpeg, "-hide_banner", "-i", str(src)], capture_output=True, text=True)
    return any(line.strip().startswith("Stream #") and " Audio:" in line for line in info.stderr.splitlines())


def copy_audio(src: Path, video_only: Path, dst: Path, name: str | None = None,
               duration: float | None = None) -> str:
    """Mux ``src``'s audio (if any) into ``video_only`` -> ``dst`` with ffmpeg; returns what
    happened. Without ffmpeg the video is kept silent (a note, not an error); ffmpeg failing
    to write ``dst`` (disk full, ...) raises :class:`~portraitseg.video.writer.WriteError`
    naming ``name`` (the final output).

    ``duration`` (the video's, in seconds) cuts audio that runs on past the last frame. Never
    ``-shortest``: an audio track that ends before the video (common) would cut the video's
    last frames off with it."""
    from .writer import WriteError

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "not copied: ffmpeg not found (install ffmpeg to keep the input's audio)"
    if not has_audio(ffmpeg, src):
        return NO_AUDIO  # "-map 1:a?" would succeed and we would claim "copied"
    error = ""
    for audio_codec in ("copy", "aac"):  # copy when the container accepts it, else re-encode
        limit = ["-t", f"{duration:.6f}"] if duration else []
        cmd = [ffmpeg, "-v", "error", "-y", "-i", str(video_only), "-i", str(src), "-map", "0:v:0",
               "-map", "1:a?", "-c:v", "copy", "-c:a", audio_codec, *limit, str(dst)]
        done = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        if done.returncode == 0:
            return "copied" if audio_codec == "copy" else "re-encoded (aac)"
        lines = done.stderr.strip().splitlines()
        error = lines[-1] if lines else f"exit {done.returncode}"
    Path(dst).unlink(missing_ok=True)
    raise WriteError(f"{name or dst}: ffmpeg could not add the audio ({error}); --no-audio writes the video "
                     "without it")
