"""A video output that is either complete under its final name or not there at all.

Frames go to a hidden ``.NAME.part<PID>.EXT`` beside the output (same folder, so the final
rename is atomic; same extension, since the container follows it). The temp file is created
before any frame is decoded, which proves the folder is writable. When the writer is done the
file is read back (it opens, has the written size, and its last frame decodes) and only then
renamed: OpenCV's writer reports no error when the disk fills up, and a killed ffmpeg leaves a
file that looks fine until the end is missing. A run killed too hard to clean up (``kill -9``)
leaves its temp file; the next run in that folder removes the temp files of processes that no
longer exist.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from .io import CODECS, codec_for, quiet_capture
from .writer import EncoderConfig, FrameWriter, WriteError, open_writer

# .NAME.part<PID>.EXT and the audio-muxing step's .NAME.part<PID>.av.EXT
_PART = re.compile(r"^\..+\.part(?P<pid>\d+)(\.av)?(?P<ext>\.[^.]+)$")
ALPHA_FRAME = re.compile(r"frame_\d{6}\.png")  # --alpha frames
_ALPHA_STAGE = re.compile(r"^\.part(?P<pid>\d+)$")  # AlphaFrames' folder of a run's frames


def part_path(dst: Path, pid: int | None = None) -> Path:
    return dst.with_name(f".{dst.stem}.part{os.getpid() if pid is None else pid}{dst.suffix}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the video temp files (``.X.part<PID>.ext``) of processes that are gone."""
    stale = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        found = _PART.match(p.name)
        if (found and found["ext"].lower() in CODECS and int(found["pid"]) != os.getpid()
                and not alive(int(found["pid"])) and p.is_file()):
            p.unlink(missing_ok=True)
            stale.append(p)
    if stale:
        print(f"note: removed {len(stale)} temporary file(s) left by a killed run in {folder}",
              file=sys.stderr)
    return stale


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silence file descriptor 2: FFmpeg inside OpenCV prints "moov atom not found" and the like
    straight to it when reading back a broken file, around our own one-line error. Used only
    once the pipeline's threads are done (it is process-wide)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def verify_video(path: Path, frames: int, name: str) -> tuple[int, int]:
    """Read back a finished video: it opens and its frame ``frames`` decodes. Returns the
    (width, height) it holds (OpenCV writes odd sizes one pixel smaller)."""
    with _stderr_silenced():
        cap = quiet_capture(str(path))
        try:
            if frames > 1:
                cap.set(cv2.CAP_PROP_POS_FRAMES, frames - 1)
            ok, last = cap.read() if cap.isOpened() else (False, None)
            # A seek past the end of a truncated MKV (no index) fails silently and the read
            # returns frame 0: the position tells which frame was read.
            ok = ok and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == frames
        finally:
            cap.release()
    if not ok or last is None:
        raise WriteError(f"{name}: the written video is incomplete (frame {frames} of {frames} cannot "
                         "be read back; disk full?)")
    return last.shape[1], last.shape[0]


class VideoOutput:
    """``reserve`` (constructor) -> ``open`` -> ``write``... -> ``finish`` -> ``publish``;
    ``discard`` on any failure. Not thread-safe: one thread writes."""

    def __init__(self, dst: str | Path) -> None:
        self.dst = Path(dst)
        codec_for(self.dst)  # the extension check first: one clear line for .xyz
        if not self.dst.parent.is_dir():
            raise FileNotFoundError(f"{self.dst.parent}: output folder does not exist")
        remove_stale_parts(self.dst.parent)
        self.tmp = part_path(self.dst)
        try:
            self.tmp.touch()
        except OSError as exc:
            raise WriteError(f"{self.dst}: cannot write in {self.dst.parent}: {exc.strerror}") from None
        self.writer: FrameWriter | None = None
        self.codec = codec_for(self.dst)  # until open() picks the writer (h264 or the fallback)
        self.frames = 0
        self.size: tuple[int, int] | None = None  # (width, height) as written, after finish()
        self.encoder_cpu_s = 0.0  # an encoder process's CPU time, after finish() (0: in-process)

    def open(self, fps: float, size: tuple[int, int], encoder: EncoderConfig | None = None) -> None:
        """Start the writer: frames are RGB (H, W, 3) or grey (H, W) uint8."""
        self.writer = open_writer(self.tmp, fps, size, name=str(self.dst), encoder=encoder)
        self.codec = self.writer.codec

    def write(self, frame: np.ndarray) -> None:
        assert self.writer is not None, "open() first"
        self.writer.write(frame)
        self.frames += 1

    def finish(self) -> tuple[int, int]:
        """Close the writer and read the file back; returns the written (width, height)."""
        if self.writer is not None:
            self.writer.release()  # interrupted or failed: the writer stays for discard() to kill
            self.encoder_cpu_s = self.writer.cpu_s
            self.writer = None
        if self.frames == 0:
            raise WriteError(f"{self.dst}: no frames were written")
        self.size = verify_video(self.tmp, self.frames, str(self.dst))
        return self.size

    def publish(self) -> Path:
        os.replace(self.tmp, self.dst)
        return self.dst

    def discard(self) -> None:
        """Stop the writer without finishing the file and delete it (safe to call twice)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.abort()
            except Exception:  # noqa: BLE001 - the run's own error is the one to report
                pass
        self.tmp.unlink(missing_ok=True)


class AlphaFrames:
    """RGBA PNGs ``frame_%06d.png`` in ``folder``, all or none: each is written atomically into
    a hidden ``.part<PID>`` folder inside it and moved in by ``publish`` once the run succeeded,
    so a failed or cut run (``discard``) leaves an earlier run's frames as they were, never a mix
    of two runs. A full disk leaves no half PNG and fails the run (one line, not libpng's)."""

    def __init__(self, folder: Path) -> None:
        """Reserve: the folder is made (and removed again by ``discard`` if it was new and
        stays empty) and proved writable before any frame is decoded, like OUT."""
        self.folder = folder
        self.created = not folder.exists()
        self.stage = folder / f".part{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.stage.mkdir(exist_ok=True)
        except OSError as exc:
            raise WriteError(f"--alpha {folder}: cannot write there: {exc.strerror or exc}") from None
        for p in folder.iterdir():  # the frames of a killed run (kill -9: no clean-up possible)
            found = _ALPHA_STAGE.match(p.name)
            if found and int(found["pid"]) != os.getpid() and not alive(int(found["pid"])) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def write(self, index: int, png: bytes) -> None:
        from ..data.io import write_atomic

        path = self.stage / f"frame_{index:06d}.png"
        try:
            write_atomic(path, png)
        except OSError as exc:  # a failed write() names no file: say which (the final name)
            raise WriteError(f"{self.folder / path.name}: {exc.strerror or exc}") from None

    def publish(self, frames: int) -> None:
        """Move the frames in (same file system: renames); an earlier, longer run's frames
        beyond ``frames`` (there only with --overwrite) would follow them: removed."""
        for p in sorted(self.stage.iterdir()):
            os.replace(p, self.folder / p.name)
        for p in self.folder.iterdir():
            if ALPHA_FRAME.fullmatch(p.name) and int(p.name[6:12]) >= frames:
                p.unlink(missing_ok=True)
        self.stage.rmdir()

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
        if self.created:
            try:
                self.folder.rmdir()  # only when empty: nothing of ours was ever moved in
            except OSError:
                pass
