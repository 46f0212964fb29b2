"""Live video (webcam, stream, a file replayed like a camera): capture, model and rendering
decoupled.

The capture thread hands every frame to the renderer and *replaces* the one frame waiting for
the model (the model always takes the newest frame; older ones are dropped, never queued). The
renderer composites each captured frame with the newest mask available (guided upsampling snaps
that mask onto the current frame's edges). A mask is used for a frame when it was computed from
a frame at most ``max_mask_age`` (N) frames away, in *either* direction: frames wait in the
render queue while the model takes the newest capture, so the mask is often from a frame a few
frames *ahead* of the one being drawn (negative age). A mask further away is not used (the
frame shows the background only).

A camera cannot wait, so there the renderer waits for the model only at start-up: no frame is
drawn before the first mask exists (drawn without one, the first frames would be blurred or
replaced everywhere, person included); until the renderer has caught up with capture once,
capture waits when the render queue is full instead of dropping frames. After that the
renderer never waits and capture drops the oldest frame when rendering falls behind. A file
read as fast as possible (``drop_when_behind=False``) can wait: the renderer waits for a usable
mask and capture runs at most N frames ahead, so every frame is drawn with a mask at most N
frames away.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..options import Bounds, option
from ..pipeline import Pipeline
from .effects import Effect, render_effect
from .io import FrameSource

DEFAULT_MAX_MASK_AGE = 15  # frames; see LiveConfig
RENDER_QUEUE = 8  # captured frames waiting for rendering; beyond it the oldest is dropped
LOG_EVERY_S = 2.0  # status line period when logging headless runs
_SENTINEL = None


@dataclass
class LiveConfig:
    """``max_mask_age`` (N): a mask computed from frame i is used for frames i-N..i+N only. With
    the model always taking the newest frame, the worst age is about 2 x model latency x
    capture fps (the mask arrives one latency late and is replaced one latency later), so the
    default 15 covers a 70 ms model on a 100 fps source or a 230 ms model at 30 fps."""

    max_mask_age: int = option(DEFAULT_MAX_MASK_AGE, "frames a mask may be reused for (older: not shown)",
                               metavar="N")
    # At least 1: 0 recorded nothing and failed at the end ("no frames were written").
    max_frames: int | None = option(None, "stop after N captured frames", metavar="N", type=int,
                                    bounds=Bounds(low=1))
    pace_fps: float | None = None  # replay a file at this rate, like a camera (None: as fast as read)
    # A camera cannot wait, so when rendering falls behind the oldest frame is dropped; a file
    # read as fast as possible can, so capture blocks instead (no frame lost) and the renderer
    # waits for a mask within N frames (no frame drawn without one after start-up).
    drop_when_behind: bool = True

    def validate(self) -> None:
        if self.max_mask_age < 0:
            raise ValueError("--max-mask-age must be >= 0")


@dataclass
class LiveStats:
    captured: int = 0
    rendered: int = 0
    masks: int = 0
    dropped: int = 0  # captured frames dropped because rendering fell behind
    unmasked: int = 0  # frames rendered without a mask within N frames (|age| > N; none at start-up)
    unmasked_after_first_mask: int = 0  # of those, after a mask had been used once
    max_mask_age: int = 0  # largest |frame - mask frame| of the masks used, either direction
    max_mask_lead: int = 0  # largest number of frames a used mask was computed *ahead* of its frame
    mean_mask_age: float = 0.0  # mean |frame - mask frame| of the masks used
    capture_fps: float = 0.0
    mask_fps: float = 0.0
    render_fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


@dataclass
class FrameInfo:
    index: int
    mask_index: int | None  # frame the newest mask was computed from
    age: int | None  # index - mask_index: negative when the mask is from a later frame
    masked: bool = False  # the mask was used (|age| <= max_mask_age)


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
        self, source: FrameSource, pipeline: Pipeline, effect: Effect, cfg: LiveConfig | None = None
    ) -> None:
        self.source, self.pipe, self.effect = source, pipeline, effect
        self.cfg = cfg or LiveConfig()
        self.cfg.validate()
        self.stats = LiveStats()
        self._frames: queue.Queue = queue.Queue(self._queue_size())
        self._slot = _LatestSlot()
        self._mask: tuple[int, np.ndarray] | None = None
        self._mask_ready = threading.Condition()
        self._age_sum = 0
        self._masked_once = False
        self._stop = threading.Event()
        # Start-up: until the renderer has a mask and has caught up with capture once (its queue
        # empty), capture waits instead of dropping frames.
        self._starting = True
        self._t0 = 0.0
        self._capture_end = 0.0
        self.error: BaseException | None = None

    def _queue_size(self) -> int:
        if self.cfg.drop_when_behind:
            return RENDER_QUEUE
        # Blocking capture runs at most (queue + 1) frames ahead of the frame being drawn, and
        # the model takes the newest capture: a queue of N - 1 keeps every new mask within N.
        return max(1, min(RENDER_QUEUE, self.cfg.max_mask_age - 1))

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
                self.pipe.times.add("capture", time.perf_counter() - t0)
                item = (idx, rgb, time.perf_counter())
                self._slot.put((idx, rgb))
                if not self.cfg.drop_when_behind or self._starting:
                    # A file read as fast as possible, or start-up (nothing is drawn before the
                    # first mask, however slow the first inference, and the frames queued
                    # meanwhile are all drawn): wait, drop nothing.
                    self._put_blocking(item)
                else:
                    self._put_dropping_oldest(item)
                idx += 1
                self.stats.captured = idx
                if self.cfg.pace_fps:
                    # Like a camera, never catch up after a stall (the start-up wait for the
                    # first mask): a burst of frames would only overflow the render queue.
                    period = 1.0 / self.cfg.pace_fps
                    next_t = max(next_t + period, time.perf_counter() - period)
                    time.sleep(max(0.0, next_t - time.perf_counter()))
        except BaseException as exc:  # surfaced by run()
            self.error = exc
        finally:
            self._capture_end = time.perf_counter()
            self._frames.put(_SENTINEL)

    def _put_dropping_oldest(self, item: tuple) -> None:
        try:
            self._frames.put_nowait(item)
        except queue.Full:  # renderer behind: drop the oldest, like a camera driver
            try:
                self._frames.get_nowait()
                self.stats.dropped += 1
            except queue.Empty:
                pass
            self._frames.put_nowait(item)

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
                prob = self.pipe.lowres(frame)
                with self._mask_ready:
                    self._mask = (idx, prob)
                    self._mask_ready.notify_all()
                self.stats.masks += 1
        except BaseException as exc:
            self.error = exc
            self._stop.set()

    def newest_mask(self) -> tuple[int, np.ndarray] | None:
        with self._mask_ready:
            return self._mask

    def _wait_for_mask(self, idx: int) -> tuple[int, np.ndarray] | None:
        """The newest mask once it is from frame ``idx - N`` or later (blocking capture), or
        once there is any mask (a camera: it waits only for the first).

        Every frame in the render queue went into the model's slot first, so the model is
        working on frame ``idx`` or a later one: a mask from ``>= idx`` always comes, unless the
        model stopped (error or shutdown; then the stop flag ends the wait). Masks only move
        forward, so a mask already beyond ``idx + N`` is returned at once (nothing better can come).
        """
        oldest = idx - self.cfg.max_mask_age if not self.cfg.drop_when_behind else -1
        with self._mask_ready:
            while (self._mask is None or self._mask[0] < oldest) and not self._stop.is_set():
                self._mask_ready.wait(0.05)
            return self._mask

    # -- renderer
    def render_one(self, idx: int, frame: np.ndarray) -> tuple[np.ndarray, FrameInfo]:
        camera_started = self.cfg.drop_when_behind and self._mask is not None
        mask = self.newest_mask() if camera_started else self._wait_for_mask(idx)
        age = idx - mask[0] if mask is not None else None
        use = age is not None and abs(age) <= self.cfg.max_mask_age
        s = self.stats
        if use:
            s.max_mask_age = max(s.max_mask_age, abs(age))
            s.max_mask_lead = max(s.max_mask_lead, -age)
            self._age_sum += abs(age)
        else:  # no mask yet, or from a frame too far away: show the background only
            s.unmasked += 1
            s.unmasked_after_first_mask += self._masked_once
        self._masked_once = self._masked_once or use
        alpha = self.pipe.alpha(mask[1] if use and mask is not None else None, frame)
        out = render_effect(self.pipe, frame, alpha, self.effect)
        return out, FrameInfo(idx, mask[0] if mask else None, age, use)

    def run(self, sink: Sink, log: Callable[[str], None] | None = None) -> LiveStats:
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
                self._starting = self._starting and not self._frames.empty()
                if self.error is not None:  # the model died while this frame waited for a mask
                    break
                t0 = time.perf_counter()
                keep_going = sink(out, info)
                self.pipe.times.add("sink", time.perf_counter() - t0)
                self.stats.rendered += 1
                if log and time.perf_counter() - last_log >= LOG_EVERY_S:
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
        ms = self.pipe.times.ms()
        stages = " ".join(f"{k} {v:.1f}" for k, v in ms.items())
        return (
            f"capture {cap:.1f} fps | mask {mask:.1f} fps | render {ren:.1f} fps | "
            f"max mask age {self.stats.max_mask_age} (lead {self.stats.max_mask_lead}) | "
            f"unmasked {self.stats.unmasked} | ms: {stages}"
        )

    def _finish(self) -> LiveStats:
        s = self.stats
        s.capture_fps, s.mask_fps, s.render_fps = (round(v, 2) for v in self._rates())
        masked = s.rendered - s.unmasked
        s.mean_mask_age = round(self._age_sum / masked, 2) if masked > 0 else 0.0
        s.stage_ms = self.pipe.times.ms()
        return s


def draw_overlay(frame: np.ndarray, text: str) -> np.ndarray:
    """Status text in the top-left corner (black outline so it reads on any background)."""
    out = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB) if frame.ndim == 2 else frame.copy()
    for i, line in enumerate(text.split(" | ")):
        org = (8, 20 + 18 * i)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, line, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
