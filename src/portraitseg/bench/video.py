"""``portraitseg video --bench``: end-to-end file -> file frames/s on a generated 1280x720 clip,
with the CPU each stage costs (the per-stage profile behind docs/video.md)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2

from ..video import VideoConfig, process_file

BENCH_FRAMES = 150  # 5 s at 30 fps: long enough for steady per-stage numbers
BENCH_INPUTS = ("mjpg", "h264")  # the clip's codec: MJPG .avi, or H.264 .mp4 (needs ffmpeg)

# Stage -> the thread it runs in (docs/video.md draws the pipeline).
STAGE_THREADS = {
    "decode": "decode", "model": "main", "smooth": "main", "post": "render", "composite": "render",
    "encode": "encode", "x264": "ffmpeg process",
}
STAGE_WORK = {
    "decode": "read + decode a frame, BGR -> RGB",
    "model": "shrink to 224x224, model call, probability",
    "smooth": "temporal smoothing at 224x224",
    "post": "keep-largest, guided upsampling to 720p",
    "composite": "blend over the background",
    "encode": "RGB -> yuv420p, pipe to ffmpeg (or OpenCV's encoder)",
    "x264": "H.264 encoding in ffmpeg",
}


def make_bench_clip(path: Path, width: int = 1280, height: int = 720, frames: int = BENCH_FRAMES) -> Path:
    """A procedural 720p test clip (person moving over a textured backdrop) for ``--bench``:
    MJPG for .avi, H.264 (x264 veryfast, CRF 20: a typical camera/phone file) for .mp4."""
    from ..testclips import ClipConfig, make_clip, synthetic_background, synthetic_person, write_video
    from ..video.writer import EncoderConfig, open_writer

    photo, mask = synthetic_person(height)
    half = frames // 3
    segs = (("still", half), ("move", frames - 2 * half), ("still", half))
    clip = make_clip(
        photo, mask, synthetic_background(height, width), ClipConfig(width, height, segments=segs)
    )
    if path.suffix.lower() != ".mp4":
        return write_video(clip.frames, path, clip.fps)
    writer = open_writer(path, clip.fps, (width, height), encoder=EncoderConfig(preset="veryfast"))
    if writer.codec != "h264":
        writer.abort()
        raise RuntimeError("--bench-input h264 needs ffmpeg with libx264 (apt-get install ffmpeg)")
    for frame in clip.frames:
        writer.write(frame)
    writer.release()
    return path


def run_video_bench(
    workdir: Path, ext: str = ".mp4", frames: int = BENCH_FRAMES, cfg: VideoConfig | None = None,
    bench_input: str = "mjpg",
) -> dict[str, object]:
    """End-to-end file -> file frames/s at 1280x720: default model, smoothing on, background
    replaced by an image; decoding (``bench_input``) and encoding (codec of ``ext``) included."""
    from ..testclips import synthetic_background

    if bench_input not in BENCH_INPUTS:
        raise ValueError(f"--bench-input must be one of {', '.join(BENCH_INPUTS)}; got {bench_input!r}")
    src = make_bench_clip(workdir / ("bench_in.mp4" if bench_input == "h264" else "bench_in.avi"),
                          frames=frames)
    cfg = cfg or VideoConfig(progress=False)
    cfg.effect = synthetic_background(720, 1280, seed=7)
    result = process_file(src, workdir / f"bench_out{ext}", cfg)
    stage_total = round(sum(result.stage_cpu_ms.values()), 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    total = result.process_cpu_ms + result.stage_cpu_ms.get("x264", 0.0)
    return {
        "benchmark": "video file->file 1280x720",
        "input_codec": "H.264" if bench_input == "h264" else "MJPG",
        "model": cfg.model.model,
        "smoothing": cfg.model.smoothing,
        "effect": "background image",
        "encoder": {"preset": cfg.encoder.preset, "crf": cfg.encoder.crf,
                    "threads": cfg.encoder.encoder_threads},
        "cv2_threads": cv2.getNumThreads(),
        "cpu_count": cores,
        **result.to_dict(),
        "stage_cpu_ms_sum": stage_total,
        # Every CPU ms a frame cost (this process + the encoder process): with all cores busy
        # and nothing else running, the frame rate cannot exceed cores * 1000 / this.
        "cpu_ms_per_frame": round(total, 2),
        "cpu_bound_fps": round(cores * 1000 / total, 1) if total > 0 else None,
    }


def stage_table(report: dict) -> str:
    """The report's per-stage CPU as a markdown table (what docs/video.md shows)."""
    cpu: dict[str, float] = report["stage_cpu_ms"]  # type: ignore[assignment]
    total = float(report["cpu_ms_per_frame"])  # type: ignore[arg-type]
    rows = ["| stage | thread | what | CPU ms/frame | share |", "|---|---|---|---:|---:|"]
    for stage, ms in cpu.items():
        rows.append(f"| {stage} | {STAGE_THREADS.get(stage, '?')} | {STAGE_WORK.get(stage, '')} | "
                    f"{ms:.2f} | {100 * ms / total:.0f}% |")
    other = total - sum(cpu.values())
    rows.append(f"| other | all | decoder workers, queues, interpreter (process CPU - stages) | "
                f"{other:.2f} | {100 * other / total:.0f}% |")
    rows.append(f"| **total** | | | **{total:.2f}** | |")
    rows.append("")
    rows.append(f"{report['end_to_end_fps']} frames/s end to end ({report['input_codec']} in, "
                f"{report['codec']} out, {report['cpu_count']} cores); CPU-bound limit "
                f"{report['cpu_bound_fps']} frames/s = {report['cpu_count']} x 1000 / {total:.2f} ms")
    return "\n".join(rows)
