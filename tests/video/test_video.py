"""Video file -> file and the live pipeline: frame counts, fps, masks, interrupts, errors."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.metrics import mask_iou as iou
from portraitseg.pipeline import Pipeline
from portraitseg.runtimes import InputFormat, OutputFormat, Runtime
from portraitseg.temporal import SmoothingConfig
from portraitseg.testclips import (
    Clip,
    ClipConfig,
    clip_from_dataset,
    make_clip,
    read_video,
    synthetic_background,
    synthetic_person,
    write_video,
)
from portraitseg.video import (
    LiveConfig,
    LivePipeline,
    ModelConfig,
    VideoConfig,
    open_source,
    open_video,
    process_file,
)

SMALL = ClipConfig(width=320, height=180, fps=25.0, segments=(("still", 8), ("move", 12), ("still", 6)))


def _lowres_fake(frame: np.ndarray) -> np.ndarray:
    """A cheap stand-in model: 'person' = brighter than the frame's mean, at 56x56."""
    g = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (56, 56), interpolation=cv2.INTER_AREA)
    return (g > g.mean()).astype(np.float32)


class FakeRuntime(Runtime):
    """A runtime around a frame -> 56x56 probability function (no model file needed)."""

    name = "fake"
    input_format = InputFormat((56, 56), "NHWC")
    output_format = OutputFormat("probability", "NHWC")

    def __init__(self, fn=_lowres_fake) -> None:
        self.fn = fn

    @property
    def num_threads(self) -> int | None:
        return None

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return image  # the fake model reads the frame itself

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.fn(tensor)[None, ..., None]


@pytest.fixture(scope="module")
def synth_clip() -> Clip:
    photo, mask = synthetic_person(120)
    return make_clip(photo, mask, synthetic_background(200, 360), SMALL)


@pytest.fixture
def synth_avi(synth_clip: Clip, tmp_path: Path) -> Path:
    return write_video(synth_clip.frames, tmp_path / "in.avi", synth_clip.fps)


def _quiet(**kw) -> VideoConfig:
    return VideoConfig(progress=False, copy_audio=False, **kw)


def test_file_to_file_keeps_count_size_fps_and_writes_alpha(synth_avi: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    res = process_file(
        synth_avi, out, _quiet(effect=(0, 255, 0), alpha_dir=tmp_path / "a"), runtime=FakeRuntime()
    )
    frames, fps = read_video(out)
    assert (res.frames, len(frames)) == (26, 26)
    assert frames[0].shape == (180, 320, 3) and fps == pytest.approx(25.0)
    assert res.codec in ("h264", "mp4v") and not res.interrupted  # h264 when ffmpeg is installed
    pngs = sorted((tmp_path / "a").glob("frame_*.png"))
    assert len(pngs) == 26
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (180, 320, 4)
    assert not list(tmp_path.glob(".out.part*"))  # temp file renamed away
    assert set(res.stage_ms) >= {"decode", "model", "post", "composite", "encode"}


def test_ctrl_c_from_a_frame_callback_leaves_a_playable_file(synth_avi: Path, tmp_path: Path) -> None:
    def interrupt_at_10(i: int, frame: np.ndarray) -> None:
        if i == 10:
            raise KeyboardInterrupt

    out = tmp_path / "cut.avi"
    res = process_file(synth_avi, out, _quiet(), runtime=FakeRuntime(), on_frame=interrupt_at_10)
    assert res.interrupted and res.frames == 10
    frames, _ = read_video(out)
    assert len(frames) == 10 and frames[0].shape == (180, 320, 3)


def test_mask_only_matches_ground_truth_on_a_real_photo_clip(shared_data: Path, tmp_path: Path) -> None:
    clip = clip_from_dataset(shared_data, 0, SMALL)
    src = write_video(clip.frames, tmp_path / "real.avi", clip.fps)
    out = tmp_path / "mask.avi"
    res = process_file(src, out, _quiet(effect="mask"))  # the default model
    masks, _ = read_video(out)
    assert res.frames == len(masks) == len(clip)
    ious = [iou(m[..., 0].astype(np.float32) / 255.0, g) for m, g in zip(masks, clip.masks)]
    assert np.mean(ious) > 0.8, np.round(ious, 3)


def test_open_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_source(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(ValueError, match="not a readable video"):
        open_video(bad)
    with pytest.raises(ValueError, match="camera 99: cannot open"):
        open_source(99)
    with pytest.raises(ValueError, match="cannot open stream"):
        open_source("http://127.0.0.1:9/stream.mjpg", open_timeout_ms=2000)


# --------------------------------------------------------------------------- live pipeline


class FakeCamera:
    """A 100 fps source: frames paced in real time, like a camera driver (a late reader gets the
    next frame one period after its previous read: no burst of missed frames)."""

    def __init__(self, frames: list[np.ndarray], fps: float = 100.0) -> None:
        self.frames = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
        self.period, self.i, self.next_t = 1.0 / fps, 0, time.perf_counter()

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.i >= len(self.frames):
            return False, None
        self.next_t = max(self.next_t + self.period, time.perf_counter() - self.period)
        time.sleep(max(0.0, self.next_t - time.perf_counter()))
        self.i += 1
        return True, self.frames[self.i - 1]

    def release(self) -> None:
        pass


def test_live_pipeline_renders_every_frame_with_fresh_masks_despite_a_slow_model(synth_clip: Clip) -> None:
    def slow_model(frame: np.ndarray) -> np.ndarray:
        time.sleep(0.05)  # a 20 fps model behind a 100 fps camera
        return _lowres_fake(frame)

    frames = (synth_clip.frames * 4)[:100]
    proc = Pipeline(FakeRuntime(slow_model), ModelConfig().postprocess, SmoothingConfig())
    pipe = LivePipeline(FakeCamera(frames), proc, "blur", LiveConfig())
    ages: list[int] = []

    def sink(out: np.ndarray, info) -> bool:
        assert out.shape == (180, 320, 3)
        if info.age is not None:
            ages.append(info.age)
        return True

    stats = pipe.run(sink)
    assert stats.captured == stats.rendered == 100 and stats.dropped == 0
    assert stats.max_mask_age <= pipe.cfg.max_mask_age
    assert stats.masks < 40  # the model skipped stale frames instead of queueing them
    assert stats.capture_fps > 80 and stats.render_fps > 70  # rendering kept up with capture
    assert stats.unmasked == 0  # nothing is drawn before the first mask (issue 18)


# --------------------------------------------------------------------------- output codec (issue 11, item 17)


def _ffprobe_codec(path: Path) -> str:
    import subprocess

    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=codec_name", "-of", "csv=p=0", str(path)], capture_output=True, text=True)
    return out.stdout.strip()


def test_mp4_is_h264_when_ffmpeg_exists(synth_avi: Path, tmp_path: Path) -> None:
    import shutil

    from portraitseg.video.writer import h264_ffmpeg

    if h264_ffmpeg() is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg with libx264 (and ffprobe) not installed: apt-get install -y ffmpeg")
    out = tmp_path / "out.mp4"
    res = process_file(synth_avi, out, _quiet(effect=(0, 255, 0)), runtime=FakeRuntime())
    assert res.codec == "h264" and _ffprobe_codec(out) == "h264"
    frames, fps = read_video(out)
    assert len(frames) == 26 and frames[0].shape == (180, 320, 3) and fps == pytest.approx(25.0)


def test_mp4_falls_back_to_mp4v_with_a_warning_without_ffmpeg(synth_avi: Path, tmp_path: Path,
                                                              monkeypatch, capfd) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # hides ffmpeg
    out = tmp_path / "out.mp4"
    res = process_file(synth_avi, out, _quiet(), runtime=FakeRuntime())
    assert res.codec == "mp4v" and len(read_video(out)[0]) == 26
    warning = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warning == [f"warning: {out}: writing mp4v (MPEG-4 Part 2, which browsers do not play) because "
                       "ffmpeg with libx264 not found (apt-get install ffmpeg)"]


def test_odd_size_mp4_falls_back_to_mp4v(tmp_path: Path, capfd) -> None:
    from portraitseg.video.writer import h264_ffmpeg, open_writer

    if h264_ffmpeg() is None:
        pytest.skip("ffmpeg with libx264 not installed")
    writer = open_writer(tmp_path / "odd.mp4", 10.0, (63, 35))  # (width, height)
    for i in range(4):
        writer.write(np.full((35, 63, 3), 40 * i, np.uint8))
    writer.release()
    assert writer.codec == "mp4v" and "63x35 is odd" in capfd.readouterr().err
    assert (tmp_path / "odd.mp4").stat().st_size > 0
