"""Video: file -> file processing and the live (webcam) pipeline.

File -> file (:func:`process_file`) is a three-stage pipeline so that both cores work: a decode
thread reads and converts frames, the main thread runs model + smoothing + post-processing +
compositing, an encode thread converts and writes (bounded queues between them; OpenCV and ONNX
Runtime release the GIL). Every frame gets its own mask. The output is written to a hidden temp
file beside OUT and renamed when done, and a Ctrl-C finalises the frames written so far, so OUT
is always a playable file.

Live (:class:`LivePipeline`): capture, model and rendering are decoupled. The capture thread
hands every frame to the renderer and *replaces* the one frame waiting for the model (the model
always takes the newest frame; older ones are dropped, never queued). The renderer composites
each captured frame with the newest mask available (guided upsampling snaps that mask onto the
current frame's edges) and never waits for the model. A mask older than ``max_mask_age`` frames
is not used (the frame shows the background only), so masks are never older than N frames.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from . import postprocess as pp
from .temporal import SmoothingConfig, TemporalSmoother, lowres_gray

VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")
# OpenCV's bundled FFmpeg can always write these two: mp4v (MPEG-4 Part 2) in MP4/MOV and
# Motion-JPEG in AVI/MKV. H.264 needs an external encoder that pip wheels do not ship.
CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
DEFAULT_MAX_MASK_AGE = 15  # frames; see LiveConfig
_SENTINEL = None


# --------------------------------------------------------------------------- sources and sinks


class FrameSource(Protocol):
    """What the pipelines read from: ``cv2.VideoCapture``'s ``read``/``release``."""

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


def codec_for(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in CODECS:
        raise ValueError(f"{path}: output must end in {', '.join(CODECS)} (the codec follows the extension)")
    return CODECS[ext]


def _quiet_open(*args: object) -> cv2.VideoCapture:
    """VideoCapture without OpenCV's multi-line warnings for a missing device or stream: the
    caller turns a failure into one clear line."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        return cv2.VideoCapture(*args)
    finally:
        cv2.utils.logging.setLogLevel(level)


def open_source(spec: str | int, open_timeout_ms: int = 5000) -> cv2.VideoCapture:
    """A camera index (``0`` or ``"0"``), a stream URL or a video file -> an opened capture.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (one line) otherwise.
    """
    text = str(spec)
    if text.isdigit():
        cap = _quiet_open(int(text))
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
        cap = _quiet_open(text, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            raise ValueError(f"{text}: cannot open stream (unreachable, or not a video stream)")
        return cap
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    cap = _quiet_open(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: not a readable video")
    return cap


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
        ok, frame = self.cap.read()
        if not ok:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self.cap.read()
            if not ok:
                return self._first
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


Effect = pp.Background | VideoBackground | str  # str: "mask" or "none" besides "blur"


def parse_effect(background: str | None, mask_only: bool = False) -> Effect:
    """CLI ``--background`` / ``--mask-only`` -> an effect: an image, a colour, ``"blur"``, a
    :class:`VideoBackground`, ``"mask"`` or ``"none"``."""
    from .inference import parse_background

    if mask_only:
        return "mask"
    if background is None:
        return "blur"
    if Path(background).suffix.lower() in VIDEO_EXTS:
        return VideoBackground(background)
    return parse_background(background)


def effect_name(effect: Effect) -> str:
    if isinstance(effect, VideoBackground):
        return f"video {effect.path.name}"
    if isinstance(effect, np.ndarray):
        return "image"
    return str(effect)


# --------------------------------------------------------------------------- per-frame work


class StageTimes:
    """Seconds accumulated per stage (thread-safe enough: each stage is written by one thread)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.count[stage] += 1

    def ms(self) -> dict[str, float]:
        return {k: round(1000 * v / max(self.count[k], 1), 2) for k, v in self.total.items()}


@dataclass
class ModelConfig:
    model: str = "default"
    threads: int = 1  # ONNX intra-op threads: 1 leaves the other core to decode/encode
    smoothing: bool = True
    smoothing_cfg: SmoothingConfig = field(default_factory=SmoothingConfig)
    postprocess: pp.PostprocessConfig = field(default_factory=pp.PostprocessConfig)


LowresModel = Callable[[np.ndarray], np.ndarray]  # RGB frame -> probability at model resolution


def load_model(cfg: ModelConfig) -> LowresModel:
    """The model as a callable RGB frame -> low-res probability (via :class:`Segmenter`)."""
    from .inference import Segmenter

    return Segmenter(cfg.model, threads=cfg.threads).lowres_prob


class FrameProcessor:
    """Model -> temporal smoothing -> post-processing -> effect, with per-stage timing.

    The split (``lowres`` then ``render``) lets the live pipeline run them in different threads.
    """

    def __init__(self, model: LowresModel, cfg: ModelConfig, times: StageTimes | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.smoothing = cfg.smoothing
        self.smoother = TemporalSmoother(cfg.smoothing_cfg)
        self.post = pp.Postprocessor(cfg.postprocess)
        self.times = times or StageTimes()

    def set_smoothing(self, on: bool) -> None:
        if on != self.smoothing:
            self.smoother.reset()
        self.smoothing = on

    def lowres(self, frame: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        prob = self.model(frame)
        t1 = time.perf_counter()
        self.times.add("model", t1 - t0)
        if self.smoothing:
            prob = self.smoother.update(prob, lowres_gray(frame, prob.shape)).copy()
            self.times.add("smooth", time.perf_counter() - t1)
        return prob

    def alpha(self, prob: np.ndarray | None, frame: np.ndarray) -> np.ndarray:
        """Full-resolution alpha (workspace-owned); ``None`` -> all background."""
        t0 = time.perf_counter()
        if prob is None:
            alpha = self.post.ws.get("alpha.none", frame.shape[:2])
            alpha[:] = 0.0
        else:
            alpha = self.post(prob, frame)
        self.times.add("post", time.perf_counter() - t0)
        return alpha

    def render(self, frame: np.ndarray, alpha: np.ndarray, effect: Effect) -> np.ndarray:
        """RGB frame + alpha -> the output frame (RGB, or grey uint8 for ``"mask"``)."""
        t0 = time.perf_counter()
        if isinstance(effect, str) and effect == "mask":
            out = cv2.convertScaleAbs(
                alpha, dst=self.post.ws.get("mask8", alpha.shape, np.uint8), alpha=255.0
            )
        elif isinstance(effect, str) and effect == "none":
            out = frame
        else:
            bg = effect.next() if isinstance(effect, VideoBackground) else effect
            out = self.post.composite(frame, alpha, bg)
        self.times.add("composite", time.perf_counter() - t0)
        return out


# --------------------------------------------------------------------------- file -> file


@dataclass
class VideoConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    effect: Effect = "blur"
    alpha_dir: Path | None = None  # also write RGBA PNGs (frame_000000.png, ...)
    copy_audio: bool = True
    queue_size: int = 8  # frames buffered between stages (bounds memory at ~3 MB a 720p frame)
    render_thread: bool = True  # post-process + composite in their own thread (overlaps the model)
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
    writer: cv2.VideoWriter, alpha_dir: Path | None, inp: queue.Queue, times: StageTimes, written: list[int]
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


def copy_audio(src: Path, video_only: Path, dst: Path) -> str:
    """Mux ``src``'s audio (if any) into ``video_only`` -> ``dst`` with ffmpeg; returns what
    happened. Without ffmpeg the video is kept silent (a note, not an error)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return "not copied: ffmpeg not found (install ffmpeg to keep the input's audio)"
    for audio_codec in ("copy", "aac"):  # copy when the container accepts it, else re-encode
        cmd = [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-i",
            str(video_only),
            "-i",
            str(src),
            "-map",
            "0:v:0",
            "-map",
            "1:a?",
            "-c:v",
            "copy",
            "-c:a",
            audio_codec,
            "-shortest",
            str(dst),
        ]
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return "copied" if audio_codec == "copy" else "re-encoded (aac)"
    return "not copied: ffmpeg failed to mux the audio"


def process_file(
    src: str | Path,
    dst: str | Path,
    cfg: VideoConfig | None = None,
    model: LowresModel | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> VideoResult:
    """Segment every frame of ``src`` and write the effect to ``dst`` (same fps and size).

    ``on_frame(index, rgb)`` is called before each frame is processed (progress hooks, tests).
    A ``KeyboardInterrupt`` stops the run, finalises the frames written so far and returns a
    result with ``interrupted=True``.
    """
    cfg = cfg or VideoConfig()
    src, dst = Path(src), Path(dst)
    codec = codec_for(dst)
    cap, first, fps = open_video(src)
    h, w = first.shape[:2]
    if not dst.parent.is_dir():
        cap.release()
        raise FileNotFoundError(f"{dst.parent}: output folder does not exist")
    if cfg.alpha_dir is not None:
        cfg.alpha_dir.mkdir(parents=True, exist_ok=True)
    times = StageTimes()
    proc = FrameProcessor(model or load_model(cfg.model), cfg.model, times)
    tmp = _temp_path(dst)
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    if not writer.isOpened():
        cap.release()
        raise ValueError(f"{dst}: OpenCV cannot write {codec} video here")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    decoded: queue.Queue = queue.Queue(cfg.queue_size)
    encoded: queue.Queue = queue.Queue(cfg.queue_size)
    stop, written = threading.Event(), [0]
    rendering: queue.Queue = queue.Queue(cfg.queue_size)
    dec = threading.Thread(target=_decode, args=(cap, first, decoded, stop, times), daemon=True)
    enc = threading.Thread(target=_encode, args=(writer, cfg.alpha_dir, encoded, times, written), daemon=True)
    errors: list[BaseException] = []
    ren = None
    if cfg.render_thread:
        ren = threading.Thread(target=_render, args=(proc, cfg, rendering, encoded, errors), daemon=True)
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
            prob = proc.lowres(frame)
            if ren is None:
                encoded.put(_render_item(proc, frame, prob, cfg))
            else:
                rendering.put((frame, prob))
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
        if ren is not None:
            rendering.put(_SENTINEL)  # the render thread forwards it to the encoder
            ren.join()
        else:
            encoded.put(_SENTINEL)
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
    proc: FrameProcessor, frame: np.ndarray, prob: np.ndarray, cfg: VideoConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = proc.alpha(prob, frame)
    out = proc.render(frame, alpha, cfg.effect)
    # The workspace buffers are reused next frame: hand the encoder copies.
    rgba = pp.cutout(frame, alpha) if cfg.alpha_dir is not None else None
    return out.copy(), rgba


def _render(
    proc: FrameProcessor, cfg: VideoConfig, inp: queue.Queue, out: queue.Queue, errors: list[BaseException]
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
            out.put(_render_item(proc, *item, cfg))
        except BaseException as exc:
            errors.append(exc)


def _finalise(src: Path, tmp: Path, dst: Path, with_audio: bool) -> str:
    """Rename the finished temp file onto ``dst`` (muxing audio in on the way when asked)."""
    audio = "not copied (interrupted)"
    if with_audio:
        muxed = tmp.with_name(tmp.stem + ".av" + tmp.suffix)
        audio = copy_audio(src, tmp, muxed)
        if muxed.exists() and not audio.startswith("not"):
            os.replace(muxed, tmp)
        elif muxed.exists():
            muxed.unlink()
    os.replace(tmp, dst)
    return audio


# --------------------------------------------------------------------------- benchmark


def make_bench_clip(path: Path, width: int = 1280, height: int = 720, frames: int = 150) -> Path:
    """A procedural 720p test clip (person moving over a textured backdrop) for ``--bench``."""
    from .testclips import ClipConfig, make_clip, synthetic_background, synthetic_person, write_video

    photo, mask = synthetic_person(height)
    half = frames // 3
    segs = (("still", half), ("move", frames - 2 * half), ("still", half))
    clip = make_clip(
        photo, mask, synthetic_background(height, width), ClipConfig(width, height, segments=segs)
    )
    return write_video(clip.frames, path, clip.fps)


def run_bench(
    workdir: Path, ext: str = ".mp4", frames: int = 150, cfg: VideoConfig | None = None
) -> dict[str, object]:
    """End-to-end file -> file frames/s at 1280x720: default model, smoothing on, background
    replaced by an image; decoding (MJPG .avi input) and encoding (codec of ``ext``) included."""
    from .testclips import synthetic_background

    src = make_bench_clip(workdir / "bench_in.avi", frames=frames)
    cfg = cfg or VideoConfig(progress=False)
    cfg.effect = synthetic_background(720, 1280, seed=7)
    result = process_file(src, workdir / f"bench_out{ext}", cfg)
    return {
        "benchmark": "video file->file 1280x720",
        "input_codec": "MJPG",
        "model": cfg.model.model,
        "smoothing": cfg.model.smoothing,
        "effect": "background image",
        "cv2_threads": cv2.getNumThreads(),
        "cpu_count": os.cpu_count(),
        **result.to_dict(),
    }


# --------------------------------------------------------------------------- live pipeline


@dataclass
class LiveConfig:
    """``max_mask_age`` (N): a mask computed from frame i is used for frames i..i+N only. With
    the model always taking the newest frame, the worst age is about 2 x model latency x
    capture fps (the mask arrives one latency late and is replaced one latency later), so the
    default 15 covers a 70 ms model on a 100 fps source or a 230 ms model at 30 fps."""

    max_mask_age: int = DEFAULT_MAX_MASK_AGE
    render_queue: int = 8  # captured frames waiting for rendering; beyond it the oldest is dropped
    max_frames: int | None = None
    pace_fps: float | None = None  # replay a file at this rate, like a camera (None: as fast as read)
    # A camera cannot wait, so when rendering falls behind the oldest frame is dropped; a file
    # read as fast as possible can, so capture blocks instead (no frame lost).
    drop_when_behind: bool = True
    log_every_s: float = 2.0


@dataclass
class LiveStats:
    captured: int = 0
    rendered: int = 0
    masks: int = 0
    dropped: int = 0  # captured frames dropped because rendering fell behind
    unmasked: int = 0  # frames rendered without a fresh-enough mask (start-up, or age > N)
    max_mask_age: int = 0
    mean_mask_age: float = 0.0
    capture_fps: float = 0.0
    mask_fps: float = 0.0
    render_fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class FrameInfo:
    index: int
    mask_index: int | None  # frame the mask was computed from
    age: int | None


class _LatestSlot:
    """One-item mailbox: ``put`` replaces what is there (stale work is dropped, not queued)."""

    def __init__(self) -> None:
        self._item: tuple[int, np.ndarray] | None = None
        self._cond = threading.Condition()

    def put(self, item: tuple[int, np.ndarray]) -> None:
        with self._cond:
            self._item = item
            self._cond.notify()

    def take(self, timeout: float) -> tuple[int, np.ndarray] | None:
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


Sink = Callable[[np.ndarray, FrameInfo], bool]  # returns False to stop


class LivePipeline:
    """Capture thread -> (newest frame) -> model thread; every captured frame -> renderer
    (the calling thread), composited with the newest mask. See the module docstring."""

    def __init__(
        self, source: FrameSource, processor: FrameProcessor, effect: Effect, cfg: LiveConfig | None = None
    ) -> None:
        self.source, self.proc, self.effect = source, processor, effect
        self.cfg = cfg or LiveConfig()
        self.stats = LiveStats()
        self._frames: queue.Queue = queue.Queue(self.cfg.render_queue)
        self._slot = _LatestSlot()
        self._mask: tuple[int, np.ndarray] | None = None
        self._mask_lock = threading.Lock()
        self._stop = threading.Event()
        self._t0 = 0.0
        self._capture_end = 0.0
        self.error: BaseException | None = None

    # -- threads
    def _capture(self) -> None:
        idx, next_t = 0, time.perf_counter()
        try:
            while not self._stop.is_set():
                if self.cfg.max_frames is not None and idx >= self.cfg.max_frames:
                    break
                t0 = time.perf_counter()
                ok, frame = self.source.read()
                if not ok or frame is None:
                    break
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                self.proc.times.add("capture", time.perf_counter() - t0)
                item = (idx, rgb, time.perf_counter())
                self._slot.put((idx, rgb))
                if not self.cfg.drop_when_behind:
                    self._put_blocking(item)
                    idx += 1
                    self.stats.captured = idx
                    continue
                try:
                    self._frames.put_nowait(item)
                except queue.Full:  # renderer behind: drop the oldest, like a camera driver
                    try:
                        self._frames.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass
                    self._frames.put_nowait(item)
                idx += 1
                self.stats.captured = idx
                if self.cfg.pace_fps:
                    next_t += 1.0 / self.cfg.pace_fps
                    time.sleep(max(0.0, next_t - time.perf_counter()))
        except BaseException as exc:  # surfaced by run()
            self.error = exc
        finally:
            self._capture_end = time.perf_counter()
            self._frames.put(_SENTINEL)

    def _put_blocking(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._frames.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def _model(self) -> None:
        try:
            while not self._stop.is_set():
                item = self._slot.take(timeout=0.05)
                if item is None:
                    continue
                idx, frame = item
                prob = self.proc.lowres(frame)
                with self._mask_lock:
                    self._mask = (idx, prob)
                self.stats.masks += 1
        except BaseException as exc:
            self.error = exc
            self._stop.set()

    def newest_mask(self) -> tuple[int, np.ndarray] | None:
        with self._mask_lock:
            return self._mask

    # -- renderer
    def render_one(self, idx: int, frame: np.ndarray) -> tuple[np.ndarray, FrameInfo]:
        mask = self.newest_mask()
        age = idx - mask[0] if mask is not None else None
        fresh = mask is not None and age is not None and 0 <= age <= self.cfg.max_mask_age
        if fresh:
            self.stats.max_mask_age = max(self.stats.max_mask_age, age)
            self._age_sum += age
        else:
            self.stats.unmasked += 1  # no mask yet, or too old to trust: show the background only
        alpha = self.proc.alpha(mask[1] if fresh else None, frame)
        out = self.proc.render(frame, alpha, self.effect)
        return out, FrameInfo(idx, mask[0] if mask else None, age)

    def run(self, sink: Sink, log: Callable[[str], None] | None = None) -> LiveStats:
        self._age_sum = 0
        self._t0 = last_log = time.perf_counter()
        threads = [
            threading.Thread(target=f, daemon=True, name=n)
            for f, n in ((self._capture, "capture"), (self._model, "model"))
        ]
        for t in threads:
            t.start()
        try:
            while True:
                item = self._frames.get()
                if item is _SENTINEL or self.error is not None:
                    break
                idx, frame, _ = item
                out, info = self.render_one(idx, frame)
                t0 = time.perf_counter()
                keep_going = sink(out, info)
                self.proc.times.add("sink", time.perf_counter() - t0)
                self.stats.rendered += 1
                if log and time.perf_counter() - last_log >= self.cfg.log_every_s:
                    last_log = time.perf_counter()
                    log(self.status_line())
                if keep_going is False:
                    break
        finally:
            self._stop.set()
            for t in threads:
                t.join(timeout=5.0)
            self.source.release()
        if self.error is not None:
            raise self.error
        return self._finish()

    def _rates(self) -> tuple[float, float, float]:
        now = time.perf_counter()
        cap_wall = (self._capture_end or now) - self._t0
        wall = now - self._t0
        s = self.stats
        return s.captured / max(cap_wall, 1e-9), s.masks / max(wall, 1e-9), s.rendered / max(wall, 1e-9)

    def status_line(self) -> str:
        cap, mask, ren = self._rates()
        ms = self.proc.times.ms()
        stages = " ".join(f"{k} {v:.1f}" for k, v in ms.items())
        return (
            f"capture {cap:.1f} fps | mask {mask:.1f} fps | render {ren:.1f} fps | "
            f"max mask age {self.stats.max_mask_age} | ms: {stages}"
        )

    def _finish(self) -> LiveStats:
        s = self.stats
        s.capture_fps, s.mask_fps, s.render_fps = (round(v, 2) for v in self._rates())
        masked = s.rendered - s.unmasked
        s.mean_mask_age = round(self._age_sum / masked, 2) if masked > 0 else 0.0
        s.stage_ms = self.proc.times.ms()
        return s


def draw_overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """Status text in the top-left corner (black outline so it reads on any background)."""
    out = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame.copy()
    for i, line in enumerate(text.split(" | ")):
        org = (8, 20 + 18 * i)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
