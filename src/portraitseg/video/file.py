"""Video file -> file: every frame segmented, the effect written with the same fps and size.

A four-stage pipeline so that both cores work: a decode thread reads and converts frames, the
main thread runs the model (+ temporal smoothing), a render thread post-processes and
composites, an encode thread converts and writes (bounded queues between them; OpenCV and the
model runtimes release the GIL). Every frame gets its own mask. The output is written to a
hidden temp file beside OUT and renamed when done, and a Ctrl-C finalises the frames written so
far, so OUT is always a playable file.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import postprocess as pp
from ..pipeline import Pipeline, StageTimes
from ..runtimes import Runtime
from ..temporal import SmoothingConfig
from .effects import Effect, ModelConfig, open_pipeline, render_effect
from .io import codec_for, copy_audio, open_video
from .writer import FrameWriter, open_writer

_SENTINEL = None


@dataclass
class VideoConfig:
    """A file -> file run (post-processing and compositing always run in their own thread,
    overlapping the model)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    effect: Effect = "blur"
    alpha_dir: Path | None = None  # also write RGBA PNGs (frame_000000.png, ...)
    copy_audio: bool = True
    queue_size: int = 8  # frames buffered between stages (bounds memory at ~3 MB a 720p frame)
    progress: bool = True


@dataclass
class VideoResult:
    frames: int
    fps: float  # the input's (and output's) frame rate
    size: tuple[int, int]  # (width, height)
    codec: str
    wall_s: float
    interrupted: bool
    audio: str  # "copied", "none" or why not
    stage_ms: dict[str, float]

    @property
    def throughput_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "fps_in": round(self.fps, 3),
            "size": list(self.size),
            "codec": self.codec,
            "wall_s": round(self.wall_s, 3),
            "end_to_end_fps": round(self.throughput_fps, 2),
            "interrupted": self.interrupted,
            "audio": self.audio,
            "stage_ms": self.stage_ms,
        }


def _temp_path(dst: Path) -> Path:
    # Same folder (so the final rename is atomic) and same extension (the container follows it).
    return dst.with_name(f".{dst.stem}.part{os.getpid()}{dst.suffix}")


def _decode(
    cap: cv2.VideoCapture, first: np.ndarray, out: queue.Queue, stop: threading.Event, times: StageTimes
) -> None:
    frame: np.ndarray | None = first
    try:
        while frame is not None and not stop.is_set():
            t0 = time.perf_counter()
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            times.add("decode", time.perf_counter() - t0)
            while not stop.is_set():
                try:
                    out.put(rgb, timeout=0.1)
                    break
                except queue.Full:
                    continue
            t0 = time.perf_counter()
            ok, frame = cap.read()
            times.add("decode", time.perf_counter() - t0)
            if not ok:
                frame = None
    finally:
        out.put(_SENTINEL)  # the consumer drains on stop, so this never blocks for long


def _encode(
    writer: FrameWriter, alpha_dir: Path | None, inp: queue.Queue, times: StageTimes, written: list[int]
) -> None:
    while True:
        item = inp.get()
        if item is _SENTINEL:
            return
        out, rgba = item
        t0 = time.perf_counter()
        code = cv2.COLOR_GRAY2BGR if out.ndim == 2 else cv2.COLOR_RGB2BGR
        writer.write(cv2.cvtColor(out, code))
        if alpha_dir is not None and rgba is not None:
            cv2.imwrite(
                str(alpha_dir / f"frame_{written[0]:06d}.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
            )
        written[0] += 1
        times.add("encode", time.perf_counter() - t0)


def process_file(
    src: str | Path,
    dst: str | Path,
    cfg: VideoConfig | None = None,
    runtime: Runtime | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> VideoResult:
    """Segment every frame of ``src`` and write the effect to ``dst`` (same fps and size).

    ``runtime`` replaces the model of ``cfg.model`` (tests, an already-open model).
    ``on_frame(index, rgb)`` is called before each frame is processed (progress hooks, tests).
    A ``KeyboardInterrupt`` stops the run, finalises the frames written so far and returns a
    result with ``interrupted=True``.
    """
    cfg = cfg or VideoConfig()
    src, dst = Path(src), Path(dst)
    codec_for(dst)  # the extension check, before anything is opened
    cap, first, fps = open_video(src)
    h, w = first.shape[:2]
    if not dst.parent.is_dir():
        cap.release()
        raise FileNotFoundError(f"{dst.parent}: output folder does not exist")
    if cfg.alpha_dir is not None:
        cfg.alpha_dir.mkdir(parents=True, exist_ok=True)
    times = StageTimes()
    if runtime is None:
        pipe = open_pipeline(cfg.model, times)
    else:
        smoothing = SmoothingConfig() if cfg.model.smoothing else None
        pipe = Pipeline(runtime, cfg.model.postprocess, smoothing, times)
    tmp = _temp_path(dst)
    try:
        writer = open_writer(tmp, fps, (w, h), name=str(dst))
    except ValueError:
        cap.release()
        raise
    codec = writer.codec
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    decoded: queue.Queue = queue.Queue(cfg.queue_size)
    encoded: queue.Queue = queue.Queue(cfg.queue_size)
    stop, written = threading.Event(), [0]
    rendering: queue.Queue = queue.Queue(cfg.queue_size)
    dec = threading.Thread(target=_decode, args=(cap, first, decoded, stop, times), daemon=True)
    enc = threading.Thread(target=_encode, args=(writer, cfg.alpha_dir, encoded, times, written), daemon=True)
    errors: list[BaseException] = []
    ren = threading.Thread(target=_render, args=(pipe, cfg, rendering, encoded, errors), daemon=True)
    ren.start()
    interrupted, n = False, 0
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=not cfg.progress, file=sys.stderr)
    t_start = time.perf_counter()
    dec.start()
    enc.start()
    try:
        while True:
            frame = decoded.get()
            if frame is _SENTINEL:
                break
            if on_frame is not None:
                on_frame(n, frame)
            rendering.put((frame, pipe.lowres(frame)))
            n += 1
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        while dec.is_alive():  # unblock the decoder if it waits on a full queue
            try:
                decoded.get(timeout=0.05)
            except queue.Empty:
                pass
        rendering.put(_SENTINEL)  # the render thread forwards it to the encoder
        ren.join()
        enc.join()
        writer.release()
        cap.release()
        bar.close()
    wall = time.perf_counter() - t_start
    if errors:
        tmp.unlink(missing_ok=True)
        raise errors[0]
    audio = _finalise(src, tmp, dst, cfg.copy_audio and not interrupted)
    return VideoResult(written[0], fps, (w, h), codec, wall, interrupted, audio, times.ms())


def _render_item(
    pipe: Pipeline, frame: np.ndarray, prob: np.ndarray, cfg: VideoConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = pipe.alpha(prob, frame)
    out = render_effect(pipe, frame, alpha, cfg.effect)
    # The workspace buffers are reused next frame: hand the encoder copies.
    rgba = pp.cutout(frame, alpha) if cfg.alpha_dir is not None else None
    return out.copy(), rgba


def _render(
    pipe: Pipeline, cfg: VideoConfig, inp: queue.Queue, out: queue.Queue, errors: list[BaseException]
) -> None:
    """Post-processing + compositing of frame t while the main thread runs the model on t+1
    (one thread: frame order is kept). After an error it keeps draining so nothing blocks."""
    while True:
        item = inp.get()
        if item is _SENTINEL:
            out.put(_SENTINEL)
            return
        if errors:
            continue
        try:
            out.put(_render_item(pipe, *item, cfg))
        except BaseException as exc:
            errors.append(exc)


def _finalise(src: Path, tmp: Path, dst: Path, with_audio: bool) -> str:
    """Rename the finished temp file onto ``dst`` (muxing audio in on the way when asked)."""
    audio = "not copied (interrupted)"
    if with_audio:
        muxed = tmp.with_name(tmp.stem + ".av" + tmp.suffix)
        audio = copy_audio(src, tmp, muxed)
        if muxed.exists() and not audio.startswith(("not", "none")):
            os.replace(muxed, tmp)
        elif muxed.exists():
            muxed.unlink()
    os.replace(tmp, dst)
    return audio
