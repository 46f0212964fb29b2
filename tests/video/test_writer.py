"""The H.264 writer: its colour conversion, its x264 settings, RGB input, byte-stable output."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.testclips import read_video
from portraitseg.video import VideoConfig, process_file
from portraitseg.video.effects import prepare_effect
from portraitseg.video.writer import EncoderConfig, h264_ffmpeg, open_writer, rgb_to_i420

ASSETS = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "assets"


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    found = h264_ffmpeg()
    if found is None:
        pytest.skip("ffmpeg with libx264 not installed: apt-get install -y ffmpeg")
    return found


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """The bundled public-domain portrait as a 640x360 RGB frame."""
    bgr = cv2.imread(str(ASSETS / "astronaut.jpg"))
    return cv2.cvtColor(cv2.resize(bgr, (640, 360), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def _ffmpeg_i420(ffmpeg: str, rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    cmd = [ffmpeg, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "-",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    out = subprocess.run(cmd, input=rgb.tobytes(), capture_output=True, check=True)
    return np.frombuffer(out.stdout, np.uint8).reshape(h * 3 // 2, w)


def test_i420_matches_ffmpegs_own_conversion(ffmpeg: str, photo: np.ndarray) -> None:
    """Same BT.601 limited-range planes as ffmpeg makes from RGB; the chroma is closer to
    ffmpeg's than OpenCV's point-sampled I420 is."""
    h = photo.shape[0]
    ref = _ffmpeg_i420(ffmpeg, photo).astype(np.int16)
    ours = rgb_to_i420(photo).astype(np.int16)
    opencv = cv2.cvtColor(photo, cv2.COLOR_RGB2YUV_I420).astype(np.int16)
    assert np.abs(ours[:h] - ref[:h]).mean() < 0.1  # luma: rounding only
    chroma_ours = np.abs(ours[h:] - ref[h:]).mean()
    assert chroma_ours < 0.5
    assert chroma_ours < 0.8 * np.abs(opencv[h:] - ref[h:]).mean()


def test_grey_frames_become_neutral_chroma() -> None:
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))  # 8x64 ramp
    yuv = rgb_to_i420(grey)
    assert yuv.shape == (12, 64)
    assert (yuv[8:] == 128).all()
    assert yuv[:8].min() == 16 and yuv[:8].max() == round(16 + 252 * 219 / 255)


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
def test_writers_take_rgb_frames(ext: str, tmp_path: Path, ffmpeg: str) -> None:
    """A pure red RGB frame comes back red (no R/B swap) from both writers, grey frames grey."""
    path = tmp_path / f"colour{ext}"
    writer = open_writer(path, 10.0, (64, 48))
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    for _ in range(3):
        writer.write(red)
    writer.write(np.full((48, 64), 200, np.uint8))
    writer.release()
    frames, _ = read_video(path)  # RGB
    assert len(frames) == 4
    r, g, b = frames[0][8:40, 8:56].reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 40 and b < 40, (r, g, b)
    assert np.abs(frames[3].astype(int) - 200).mean() < 4


def test_encoder_settings_reach_x264(ffmpeg: str, photo: np.ndarray, tmp_path: Path) -> None:
    """x264 records its settings in the stream: the preset's (CABAC off in ultrafast, on in
    veryfast), the CRF and the thread count given."""
    found = {}
    for cfg in (EncoderConfig(), EncoderConfig(preset="veryfast", crf=26, encoder_threads=2)):
        path = tmp_path / f"{cfg.preset}.mp4"
        writer = open_writer(path, 10.0, (640, 360), encoder=cfg)
        for shift in range(3):
            writer.write(np.roll(photo, 8 * shift, axis=1))
        writer.release()
        found[cfg.preset] = path.read_bytes()
        assert writer.cpu_s > 0  # the encoder process's CPU time, for the bench
    assert b"cabac=0" in found["ultrafast"] and b"crf=20.0" in found["ultrafast"]
    assert b" threads=1 " in found["ultrafast"]
    assert b"cabac=1" in found["veryfast"] and b"crf=26.0" in found["veryfast"]
    assert b" threads=2 " in found["veryfast"]


def test_bad_encoder_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="--preset must be one of"):
        EncoderConfig(preset="warp")
    with pytest.raises(ValueError, match="--crf"):
        EncoderConfig(crf=60)
    with pytest.raises(ValueError, match="--encoder-threads"):
        EncoderConfig(encoder_threads=-1)


def test_same_settings_give_the_same_bytes(ffmpeg: str, photo: np.ndarray, tmp_path: Path) -> None:
    """Two runs of the whole pipeline (bundled model, smoothing, threads overlapping) on one
    clip write identical files."""
    clip = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 360))
    for shift in range(12):
        writer.write(cv2.cvtColor(np.roll(photo, 6 * shift, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    digests = []
    for run in range(2):
        out = tmp_path / f"out{run}.mp4"
        cfg = VideoConfig(progress=False, copy_audio=False, effect=(0, 120, 255))
        result = process_file(clip, out, cfg)
        assert result.codec == "h264" and result.frames == 12
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_a_background_photo_is_scaled_once_to_the_frame(photo: np.ndarray) -> None:
    from portraitseg import postprocess as pp

    prepared = prepare_effect(photo, (720, 1280))
    assert isinstance(prepared, np.ndarray) and prepared.shape == (720, 1280, 3)
    assert prepared.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(prepared, pp.resize_cover(photo, (720, 1280)))
    # Already the frame's size: the composite reads it as it is (no per-frame copy).
    assert pp.make_background(prepared[:, :, :1].repeat(3, axis=2), prepared) is prepared
    assert prepare_effect("blur", (720, 1280)) == "blur"


def test_ffprobe_reads_the_stream_we_wrote(ffmpeg: str, photo: np.ndarray, tmp_path: Path) -> None:
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed: apt-get install -y ffmpeg")
    path = tmp_path / "probe.mp4"
    writer = open_writer(path, 25.0, (640, 360))
    for _ in range(5):
        writer.write(photo)
    writer.release()
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name,pix_fmt,width,height,nb_frames", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert probe == "h264,640,360,yuv420p,5"
