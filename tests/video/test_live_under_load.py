"""The live pipeline when rendering lags the model (issue 11, item 8): masks from frames ahead
of the drawn one are used, no frame after start-up goes unmasked, and the stats say what
happened. Delays are forced with events (a model that waits for the capture, a sink that waits
for a mask), so every assertion is about counts and ages, never about time.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_video import FakeCamera, FakeRuntime, _lowres_fake

from portraitseg.cli import main
from portraitseg.pipeline import Pipeline
from portraitseg.testclips import (
    ClipConfig,
    clip_from_dataset,
    make_clip,
    synthetic_background,
    synthetic_person,
    write_video,
)
from portraitseg.video import FrameInfo, LiveConfig, LivePipeline, ModelConfig

SMALL = ClipConfig(width=160, height=96, fps=25.0, segments=(("still", 10), ("move", 20), ("still", 10)))
WAIT_S = 20.0  # bound on every forced wait (only reached if the pipeline is broken)


class ListSource:
    """A file read as fast as possible: every frame at once; counts the frames read. With
    ``hold_after_first``, frame 1 is read only once that event is set."""

    def __init__(self, frames: list[np.ndarray], hold_after_first: threading.Event | None = None) -> None:
        self.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
        self.read_count = 0
        self.hold = hold_after_first

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.read_count >= len(self.frames):
            return False, None
        if self.read_count == 1 and self.hold is not None:
            _until(self.hold.is_set, "the model to take frame 0")
        self.read_count += 1
        return True, self.frames[self.read_count - 1]

    def release(self) -> None:
        pass


def _until(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.005)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    photo, mask = synthetic_person(80)
    return make_clip(photo, mask, synthetic_background(120, 200), SMALL).frames


def _check_stats(stats, infos: list[FrameInfo], limit: int) -> None:
    """The stats are what the frames saw."""
    masked = [i for i in infos if i.masked]
    assert all(abs(i.age) <= limit for i in masked)
    assert all(i.age is None or abs(i.age) > limit for i in infos if not i.masked)
    assert stats.unmasked == len(infos) - len(masked)
    assert stats.max_mask_age == max((abs(i.age) for i in masked), default=0)
    assert stats.max_mask_lead == max((max(-i.age, 0) for i in masked), default=0)
    first = next((k for k, i in enumerate(infos) if i.masked), len(infos))
    assert stats.unmasked_after_first_mask == sum(not i.masked for i in infos[first:])


def test_fast_file_uses_masks_from_later_frames_and_leaves_none_unmasked(frames: list[np.ndarray]) -> None:
    # The model's first frame must be frame 0: were the model thread to start after capture had
    # queued every frame it can, its first (and then only) frame would be the newest, and no
    # second mask would ever come while drawing waits (a flaky deadlock, 1 run in 5).
    first_call = threading.Event()
    source, calls = ListSource(frames, hold_after_first=first_call), [0]

    def model(frame: np.ndarray) -> np.ndarray:
        calls[0] += 1
        first_call.set()
        if calls[0] == 1:  # the first mask is slow: capture fills the render queue meanwhile
            _until(lambda: source.read_count >= 10, "capture to run ahead")
        return _lowres_fake(frame)

    proc = Pipeline(FakeRuntime(model), ModelConfig().postprocess)
    cfg = LiveConfig(drop_when_behind=False)  # `webcam FILE --fast`
    live = LivePipeline(source, proc, "blur", cfg)
    infos: list[FrameInfo] = []

    def sink(out: np.ndarray, info: FrameInfo) -> bool:
        infos.append(info)
        if info.index == 0:  # drawing lags: the model's next mask (from the newest capture) lands first
            _until(lambda: live.stats.masks >= 2, "the second mask")
        return True

    stats = live.run(sink)
    assert stats.captured == stats.rendered == len(frames) == len(infos)
    assert stats.unmasked == 0 and stats.unmasked_after_first_mask == 0
    assert infos[1].age is not None and infos[1].age <= -8  # frame 1 drawn with the mask of frame >= 9
    assert stats.max_mask_lead >= 8 and stats.max_mask_age <= cfg.max_mask_age
    _check_stats(stats, infos, cfg.max_mask_age)


def test_fast_file_with_a_small_mask_age_limit_stays_within_it(frames: list[np.ndarray]) -> None:
    def slow(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.01)
        return _lowres_fake(frame)

    cfg = LiveConfig(drop_when_behind=False, max_mask_age=3)
    live = LivePipeline(ListSource(frames), Pipeline(FakeRuntime(slow)), "blur", cfg)
    infos: list[FrameInfo] = []
    stats = live.run(lambda out, info: infos.append(info) is None)
    assert stats.rendered == len(frames) and stats.unmasked == 0
    _check_stats(stats, infos, 3)


def test_camera_mode_stats_are_true(frames: list[np.ndarray]) -> None:
    def slow(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.03)
        return _lowres_fake(frame)

    slow_sink = threading.Event()
    cfg = LiveConfig(max_mask_age=4)
    live = LivePipeline(FakeCamera(frames), Pipeline(FakeRuntime(slow)), "blur", cfg)
    infos: list[FrameInfo] = []

    def sink(out: np.ndarray, info: FrameInfo) -> bool:
        infos.append(info)
        slow_sink.wait(0.002)
        return True

    stats = live.run(sink)
    assert stats.rendered == len(infos) and stats.rendered + stats.dropped == stats.captured
    _check_stats(stats, infos, 4)


def test_webcam_fast_on_a_real_photo_clip_has_no_unmasked_frames(shared_data: Path, tmp_path: Path) -> None:
    clip = clip_from_dataset(shared_data, 0, SMALL)
    src = write_video(clip.frames, tmp_path / "clip.avi", clip.fps)
    out, report = tmp_path / "o.avi", tmp_path / "j.json"
    assert main(["webcam", str(src), "--output", str(out), "--fast", "--json", str(report)]) == 0
    stats = json.loads(report.read_text())
    assert stats["captured"] == stats["rendered"] == len(clip)
    assert stats["unmasked"] == 0 and stats["unmasked_after_first_mask"] == 0
    assert stats["max_mask_age"] <= stats["max_mask_age_limit"]


def test_camera_shows_no_frame_before_the_first_mask(frames: list[np.ndarray]) -> None:
    """Issue 18: the first frames used to be drawn without a mask, i.e. replaced everywhere,
    person included. Now rendering starts with the first mask (the frames captured meanwhile
    wait in the render queue)."""
    camera = FakeCamera(frames)

    def model(frame: np.ndarray) -> np.ndarray:
        if camera.i < 4:  # the first mask comes late: frames 0-3 are captured before it
            _until(lambda: camera.i >= 4, "the camera to deliver 4 frames")
        return _lowres_fake(frame)

    green = np.array([0, 255, 0], np.uint8)
    live = LivePipeline(camera, Pipeline(FakeRuntime(model), ModelConfig().postprocess), (0, 255, 0),
                        LiveConfig(max_mask_age=8))
    first: list[np.ndarray] = []
    infos: list[FrameInfo] = []

    def sink(out: np.ndarray, info: FrameInfo) -> bool:
        if not infos:
            first.append(out.copy())
        infos.append(info)
        return True

    stats = live.run(sink)
    assert infos[0].index == 0 and infos[0].masked and stats.unmasked == 0
    person = np.any(first[0] != green, axis=2)  # pixels kept from the frame
    assert person.mean() > 0.05, "the first frame was replaced everywhere"
    _check_stats(stats, infos, 8)
