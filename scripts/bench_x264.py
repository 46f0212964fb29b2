"""What each x264 setting costs and gives on the ``video --bench`` content: encoder CPU ms per
frame, bitrate and PSNR of the decoded file against the frames the pipeline rendered.

    nice -n 15 python scripts/bench_x264.py                     # the table in docs/video.md
    python scripts/bench_x264.py --presets ultrafast veryfast --crf 18 20 23

The bench clip (1280x720, person over a textured backdrop, 150 frames) is run once through the
pipeline (default model, smoothing, background image); the rendered RGB frames are then encoded
by the same :class:`~portraitseg.video.writer.FFmpegWriter` the ``video`` command uses, one
setting at a time, and read back with OpenCV. The CPU is the ffmpeg process's (user + system),
so it does not depend on what else the pipeline was doing. A timing, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from portraitseg.bench.video import BENCH_FRAMES, make_bench_clip
from portraitseg.testclips import read_video, synthetic_background
from portraitseg.video.effects import ModelConfig, open_pipeline
from portraitseg.video.writer import EncoderConfig, FFmpegWriter, h264_ffmpeg


def rendered_frames(workdir: Path, frames: int) -> tuple[list[np.ndarray], float]:
    clip, fps = read_video(make_bench_clip(workdir / "in.avi", frames=frames))
    pipe = open_pipeline(ModelConfig())
    bg = synthetic_background(720, 1280, seed=7)
    return [pipe(f, "composite", bg).copy() for f in clip], fps


def psnr(path: Path, frames: list[np.ndarray]) -> float:
    cap = cv2.VideoCapture(str(path))
    values = []
    for ref in frames:
        ok, bgr = cap.read()
        if not ok:
            raise RuntimeError(f"{path}: fewer frames than written")
        mse = np.mean((cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) - ref) ** 2)
        values.append(10 * np.log10(255.0**2 / max(float(mse), 1e-9)))
    cap.release()
    return float(np.mean(values))


def encode(ffmpeg: str, path: Path, frames: list[np.ndarray], fps: float, cfg: EncoderConfig) -> float:
    """Encode; returns the encoder's CPU ms per frame."""
    h, w = frames[0].shape[:2]
    writer = FFmpegWriter(ffmpeg, path, fps, (w, h), encoder=cfg)
    for f in frames:
        writer.write(f)
    writer.release()
    return 1000 * writer.cpu_s / len(frames)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["ultrafast", "superfast", "veryfast"])
    ap.add_argument("--crf", nargs="+", type=float, default=[20.0])
    ap.add_argument("--threads", nargs="+", type=int, default=[1])
    ap.add_argument("--frames", type=int, default=BENCH_FRAMES)
    args = ap.parse_args()
    ffmpeg = h264_ffmpeg()
    if ffmpeg is None:
        raise SystemExit("error: needs ffmpeg with libx264 (apt-get install ffmpeg)")
    with tempfile.TemporaryDirectory(prefix="portraitseg-x264-") as tmp:
        work = Path(tmp)
        frames, fps = rendered_frames(work, args.frames)
        settings = [EncoderConfig(p, c, t) for p in args.presets for c in args.crf for t in args.threads]
        rows = []
        for cfg in tqdm(settings, desc="x264 settings", unit="setting"):
            path = work / f"{cfg.preset}_{cfg.crf:g}_{cfg.encoder_threads}.mp4"
            cpu = encode(ffmpeg, path, frames, fps, cfg)
            mbps = path.stat().st_size * 8 / (len(frames) / fps) / 1e6
            rows.append((cfg, cpu, mbps, psnr(path, frames)))
    print("| preset | CRF | x264 threads | encoder CPU ms/frame | Mbit/s | PSNR dB (RGB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for cfg, cpu, mbps, db in rows:
        print(f"| {cfg.preset} | {cfg.crf:g} | {cfg.encoder_threads} | {cpu:.2f} | {mbps:.2f} | {db:.2f} |")


if __name__ == "__main__":
    main()
