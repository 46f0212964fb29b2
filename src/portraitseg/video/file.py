"""Video file -> file: every frame segmented, the effect written at the input's frame rate.

A four-stage pipeline so that both cores work: a decode thread reads and converts frames, the
main thread runs the model (+ temporal smoothing), a render thread post-processes and
composites, an encode thread converts and writes (bounded queues between them; OpenCV and the
model runtimes release the GIL). Every blocking queue operation polls the run's stop signals
(:class:`_Flow`), so a stage that dies (the encoder on a full disk, say) ends the run within a
fraction of a second with its error instead of leaving the others waiting forever.

The output is constant frame rate at the input's (average) rate. A variable-frame-rate input is
resampled onto that grid by its frame timestamps (a frame is repeated or dropped where the
input's spacing differs), so the picture stays in sync with the copied audio; a constant-rate
input maps one to one. The file is written through :class:`~.output.VideoOutput` (temp file,
read back, renamed); a Ctrl-C finalises the frames done so far, so OUT is a playable file.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .. import postprocess as pp
from ..pipeline import Pipeline, StageTimes
from ..runtimes import Runtime
from ..temporal import SmoothingConfig
from .effects import Effect, ModelConfig, open_pipeline, prepare_effect, render_effect
from .io import SkipDamaged, copy_audio, damage_line, open_video
from .output import AlphaFrames, VideoOutput
from .writer import EncoderConfig

_SENTINEL = None
POLL_S = 0.1  # how often a waiting stage checks the stop signals
ABORT_WAIT_S = 2.0  # how long a failed run waits for its stages before deleting the output


@dataclass
class VideoConfig:
    """A file -> file run (post-processing and compositing always run in their own thread,
    overlapping the model)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # H.264 outputs
    effect: Effect = "blur"
    alpha_dir: Path | None = None  # also write RGBA PNGs (frame_000000.png, ...)
    copy_audio: bool = True
    queue_size: int = 8  # frames buffered between stages (bounds memory at ~3 MB a 720p frame)
    progress: bool = True


@dataclass
class VideoResult:
    frames: int  # written (after resampling a variable-frame-rate input)
    fps: float  # the output's constant frame rate (the input's average)
    size: tuple[int, int]  # (width, height) as written
    codec: str
    wall_s: float
    interrupted: bool
    audio: str  # "copied", "none ...", or why not
    stage_ms: dict[str, float]
    frames_in: int = 0  # input frames read
    size_in: tuple[int, int] = (0, 0)  # the input's (width, height)
    # CPU ms per frame of each stage in its thread, and "x264": the ffmpeg encoder process
    # (per frame written); their sum / cores is the CPU-bound limit of the frame rate.
    stage_cpu_ms: dict[str, float] = field(default_factory=dict)
    # This process's CPU ms per frame over the run, all threads (the stages above plus what no
    # stage timer sees: decoder worker threads, queue hand-offs, the interpreter).
    process_cpu_ms: float = 0.0
    # Input frames that did not decode (a damaged file): skipped, the frame before fills their time.
    frames_unreadable: int = 0
    frames_listed: int = 0  # the input's frame count as its container states it (0: not stated)
    published: bool = True  # False: interrupted, and the earlier file at the output was kept instead

    @property
    def throughput_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def resampled(self) -> bool:
        """Frames were repeated or dropped to keep a variable-rate input's timing."""
        return self.frames != self.frames_in and not (self.interrupted or self.frames_unreadable)

    def input_damage(self) -> str | None:
        """What was wrong with the input (:func:`~.io.damage_line`; None: nothing, or cut short)."""
        return None if self.interrupted else damage_line(self.frames_in, self.frames_unreadable,
                                                         self.frames_listed)

    def to_dict(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "frames_in": self.frames_in,
            "frames_unreadable": self.frames_unreadable,
            "frames_listed": self.frames_listed,
            "fps_in": round(self.fps, 3),
            "size": list(self.size),
            "size_in": list(self.size_in),
            "codec": self.codec,
            "wall_s": round(self.wall_s, 3),
            "end_to_end_fps": round(self.throughput_fps, 2),
            "interrupted": self.interrupted,
            "published": self.published,
            "audio": self.audio,
            "stage_ms": self.stage_ms,
            "stage_cpu_ms": self.stage_cpu_ms,
            "process_cpu_ms": self.process_cpu_ms,
        }


class _Flow:
    """The stop signals and first error shared by the pipeline's threads.

    ``reading_done``: decoding stops (end of input or Ctrl-C); frames already decoded are still
    rendered and written. ``aborted``: a stage failed (or a second Ctrl-C); every stage stops at
    once and the output is deleted.
    """

    def __init__(self) -> None:
        self.reading_done = threading.Event()
        self.aborted = threading.Event()
        self.errors: list[BaseException] = []

    def fail(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.aborted.set()

    def put(self, q: queue.Queue, item: object, reader: bool = False) -> bool:
        """Put unless the run aborts (or, for the reader, reading is done); False if not put."""
        while not self.aborted.is_set() and not (reader and self.reading_done.is_set()):
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def get(self, q: queue.Queue) -> object:
        """The next item, or the sentinel when the run aborts."""
        while not self.aborted.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return _SENTINEL

    def thread(self, target: Callable[..., None], *args: object) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:  # any stage's error ends the run, reported by process_file
                self.fail(exc)

        return threading.Thread(target=run, daemon=True)

    def join(self, threads: list[threading.Thread], timeout: float | None = None) -> None:
        """Wait for the stages (at most ``timeout`` s). In short steps: a second Ctrl-C must
        reach the main thread promptly."""
        end = None if timeout is None else time.perf_counter() + timeout
        for t in threads:
            while t.is_alive() and (end is None or time.perf_counter() < end):
                t.join(POLL_S)


class _Timeline:
    """Input frame timestamps -> how many output frames each one fills on a constant-rate grid.

    A frame starting at ``t`` (seconds since the first frame) starts at output frame
    ``round(t * fps)``; it fills the slots up to the next frame's start (0: dropped, 2+:
    repeated). A missing or non-increasing timestamp (some containers' glitches) counts as one
    frame after the previous one, so a constant-rate input always maps one to one.
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.t0: float | None = None
        self.last: float | None = None

    def start_slot(self, msec: float) -> int:
        t = msec / 1000.0
        if self.t0 is None:
            self.t0 = t
        if self.last is not None and not t > self.last:
            t = self.last + 1.0 / self.fps
        self.last = t
        return int(np.floor((t - self.t0) * self.fps + 0.5))


def _decode(cap: SkipDamaged, first: np.ndarray, fps: float, out: queue.Queue, flow: _Flow,
            times: StageTimes) -> None:
    """Items ``(rgb, repeats, input frames covered)``; frames that fill no output slot are
    skipped here (not segmented), their count carried by the next item for the progress bar.
    A frame that does not decode is skipped too: the next one's timestamp makes the frame
    before it fill its time (``cap.unreadable`` counts them)."""
    timeline = _Timeline(fps)
    frame: np.ndarray | None = first
    slot = timeline.start_slot(cap.get(cv2.CAP_PROP_POS_MSEC))
    covered = 0
    try:
        while frame is not None and not flow.reading_done.is_set() and not flow.aborted.is_set():
            with times.measure("decode"):
                ok, following = cap.read()
                next_slot = timeline.start_slot(cap.get(cv2.CAP_PROP_POS_MSEC)) if ok else slot + 1
                repeats = max(0, next_slot - slot)
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if repeats else None
            covered += 1
            if repeats:
                if not flow.put(out, (rgb, repeats, covered), reader=True):
                    break
                covered = 0
            frame, slot = (following if ok else None), next_slot
    finally:
        # The main thread drains until it sees this; after a Ctrl-C it no longer reads, so give up then.
        flow.put(out, _SENTINEL, reader=True)


def _encode(out: VideoOutput, alpha: AlphaFrames | None, inp: queue.Queue, flow: _Flow,
            times: StageTimes) -> None:
    while (item := flow.get(inp)) is not _SENTINEL:
        frame, rgba, repeats = item
        with times.measure("encode"):
            png = None
            if alpha is not None and rgba is not None:
                from ..data.io import encode_image

                png = encode_image(rgba, ".png")
            for _ in range(repeats):
                if png is not None:
                    alpha.write(out.frames, png)
                out.write(frame)


def _render_item(
    pipe: Pipeline, frame: np.ndarray, prob: np.ndarray, cfg: VideoConfig
) -> tuple[np.ndarray, np.ndarray | None]:
    alpha = pipe.alpha(prob, frame)
    out = render_effect(pipe, frame, alpha, cfg.effect)
    # The workspace buffers are reused next frame: hand the encoder copies.
    rgba = pp.cutout(frame, alpha) if cfg.alpha_dir is not None else None
    return out.copy(), rgba


def _render(pipe: Pipeline, cfg: VideoConfig, inp: queue.Queue, out: queue.Queue, flow: _Flow) -> None:
    """Post-processing + compositing of frame t while the main thread runs the model on t+1
    (one thread: frame order is kept). Passes the end-of-stream sentinel on."""
    while (item := flow.get(inp)) is not _SENTINEL:
        frame, prob, repeats = item
        if not flow.put(out, (*_render_item(pipe, frame, prob, cfg), repeats)):
            return
    flow.put(out, _SENTINEL)


def _open_pipeline(cfg: VideoConfig, runtime: Runtime | None, times: StageTimes) -> Pipeline:
    if runtime is None:
        return open_pipeline(cfg.model, times)
    smoothing = SmoothingConfig() if cfg.model.smoothing else None
    return Pipeline(runtime, cfg.model.postprocess, smoothing, times)


def process_file(
    src: str | Path,
    dst: str | Path,
    cfg: VideoConfig | None = None,
    runtime: Runtime | None = None,
    on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> VideoResult:
    """Segment every frame of ``src`` and write the effect to ``dst`` (the input's size and
    average frame rate, variable-rate inputs resampled by timestamp).

    ``runtime`` replaces the model of ``cfg.model`` (tests, an already-open model).
    ``on_frame(index, rgb)`` is called before each frame is processed (progress hooks, tests).
    A ``KeyboardInterrupt`` stops reading, finalises the frames done so far (kept unless a file
    was at ``dst`` already: that one is kept, ``published=False``) and returns a result with
    ``interrupted=True``; a second one (or any error, e.g. :class:`~.writer.WriteError` for
    a full disk) stops every stage, deletes the unfinished output and raises.
    """
    cfg = cfg or VideoConfig()
    src, dst = Path(src), Path(dst)
    out = VideoOutput(dst)  # extension, folder and writability checked before decoding anything
    alpha = None
    try:
        alpha = AlphaFrames(cfg.alpha_dir) if cfg.alpha_dir is not None else None  # writable, too
        return _run(src, out, alpha, cfg, runtime, on_frame)
    except BaseException:
        out.discard()
        if alpha is not None:
            alpha.discard()
        raise


@dataclass
class _Job:
    """What the stages of one run share."""

    cfg: VideoConfig
    pipe: Pipeline
    out: VideoOutput
    alpha: AlphaFrames | None
    times: StageTimes


def _run(src: Path, out: VideoOutput, alpha: AlphaFrames | None, cfg: VideoConfig, runtime: Runtime | None,
         on_frame: Callable[[int, np.ndarray], None] | None) -> VideoResult:
    cap, first, fps = open_video(src)
    try:
        h, w = first.shape[:2]
        cfg = replace(cfg, effect=prepare_effect(cfg.effect, (h, w)))
        times = StageTimes()
        pipe = _open_pipeline(cfg, runtime, times)
        out.open(fps, (w, h), cfg.encoder)
        t_start, cpu_start = time.perf_counter(), _process_cpu_s()
        source = SkipDamaged(cap)
        frames_in, interrupted = _stream(source, first, fps, _Job(cfg, pipe, out, alpha, times), on_frame)
        listed = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        wall, process_cpu = time.perf_counter() - t_start, _process_cpu_s() - cpu_start
        size = out.finish()
        audio = _add_audio(src, out, fps, cfg.copy_audio, interrupted)
        # A cut run never replaces an earlier file (there only with --overwrite): a complete
        # result is worth more than the first part of a new one. Without one, the cut file is kept.
        published = not (interrupted and out.dst.exists())
        if published:
            out.publish()
            if alpha is not None:
                alpha.publish(out.frames)
        else:
            out.discard()
            if alpha is not None:
                alpha.discard()
    finally:
        cap.release()
    cpu = times.cpu_ms()
    if out.encoder_cpu_s:
        cpu["x264"] = round(1000 * out.encoder_cpu_s / max(out.frames, 1), 2)
    return VideoResult(out.frames, fps, size, out.codec, wall, interrupted, audio, times.ms(),
                       frames_in, (w, h), cpu, round(1000 * process_cpu / max(out.frames, 1), 2),
                       frames_unreadable=source.unreadable, frames_listed=listed, published=published)


def _process_cpu_s() -> float:
    return time.process_time()  # all of this process's threads, user + system


def _stream(cap: SkipDamaged, first: np.ndarray, fps: float, job: _Job,
            on_frame: Callable[[int, np.ndarray], None] | None) -> tuple[int, bool]:
    """Run the four stages to the end of the input (or a Ctrl-C); returns (input frames read,
    interrupted). Raises the first stage error."""
    from tqdm import tqdm

    flow, size = _Flow(), job.cfg.queue_size
    frames: queue.Queue = queue.Queue(size)
    rendering: queue.Queue = queue.Queue(size)
    encoded: queue.Queue = queue.Queue(size)
    threads = [flow.thread(_decode, cap, first, fps, frames, flow, job.times),
               flow.thread(_render, job.pipe, job.cfg, rendering, encoded, flow),
               flow.thread(_encode, job.out, job.alpha, encoded, flow, job.times)]
    for t in threads:
        t.start()
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    bar = tqdm(total=total, unit="frame", disable=not job.cfg.progress, file=sys.stderr)
    interrupted, n, frames_in = False, 0, 0
    try:
        try:
            while (item := flow.get(frames)) is not _SENTINEL:
                rgb, repeats, covered = item
                if on_frame is not None:
                    on_frame(n, rgb)
                if not flow.put(rendering, (rgb, job.pipe.lowres(rgb), repeats)):
                    break
                n, frames_in = n + 1, frames_in + covered
                bar.update(covered)
        except KeyboardInterrupt:
            interrupted = True
        flow.reading_done.set()
        flow.put(rendering, _SENTINEL)  # rendering and encoding finish what was decoded
        flow.join(threads)
    except BaseException as exc:  # a second Ctrl-C, SIGTERM or a model error: stop everything
        flow.fail(exc)
        raise
    finally:
        flow.reading_done.set()
        flow.aborted.set()  # nothing of this run keeps going after it returns
        # After an error the stages stop within POLL_S; one blocked on a stuck encoder is
        # freed when the caller discards the output (which kills ffmpeg), so do not wait long.
        flow.join(threads, timeout=ABORT_WAIT_S)
        bar.close()
    if flow.errors:
        raise flow.errors[0]
    return frames_in, interrupted


def _add_audio(src: Path, out: VideoOutput, fps: float, wanted: bool, interrupted: bool) -> str:
    """Mux the input's audio into the finished temp file (verified again after), or say why not."""
    if not wanted:
        return "not copied (--no-audio)"
    if interrupted:
        return "not copied (interrupted)"
    muxed = out.tmp.with_name(out.tmp.stem + ".av" + out.tmp.suffix)
    try:
        audio = copy_audio(src, out.tmp, muxed, name=str(out.dst), duration=out.frames / fps)
        if muxed.exists():
            from .output import verify_video

            verify_video(muxed, out.frames, str(out.dst))
            os.replace(muxed, out.tmp)
    finally:
        muxed.unlink(missing_ok=True)
    return audio
