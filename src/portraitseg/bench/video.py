"""``portraitseg video --bench``: end-to-end file -> file frames/s on a generated 1280x720 clip."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from ..video import VideoConfig, process_file

BENCH_FRAMES = 150  # 5 s at 30 fps: long enough for steady per-stage numbers


def make_bench_clip(path: Path, width: int = 1280, height: int = 720, frames: int = BENCH_FRAMES) -> Path:
    """A procedural 720p test clip (person moving over a textured backdrop) for ``--bench``."""
    from ..testclips import ClipConfig, make_clip, synthetic_background, synthetic_person, write_video

    photo, mask = synthetic_person(height)
    half = frames // 3
    segs = (("still", half), ("move", frames - 2 * half), ("still", half))
    clip = make_clip(
        photo, mask, synthetic_background(height, width), ClipConfig(width, height, segments=segs)
    )
    return write_video(clip.frames, path, clip.fps)


def run_video_bench(
    workdir: Path, ext: str = ".mp4", frames: int = BENCH_FRAMES, cfg: VideoConfig | None = None
) -> dict[str, object]:
    """End-to-end file -> file frames/s at 1280x720: default model, smoothing on, background
    replaced by an image; decoding (MJPG .avi input) and encoding (codec of ``ext``) included."""
    from ..testclips import synthetic_background

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
