"""``portraitseg video IN OUT``: segment every frame of a video file and write an effect."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ._common import add_config_flags, add_postprocess_flags, config_from_args, postprocess_config

DESCRIPTION = """\
Segment every frame of IN and write OUT with the same fps and size. The codec follows OUT's
extension: .mp4/.m4v/.mov -> H.264 through ffmpeg when installed (else mp4v, MPEG-4 Part 2,
with a warning), .avi/.mkv -> MJPG. Audio is copied with
ffmpeg when it is installed. OUT is written to a temp file and renamed at the end; Ctrl-C keeps
the frames done so far (a playable file).

--bench measures end-to-end frames/s on a generated 1280x720 clip (decode + model + smoothing
+ background replacement + encode) and prints/writes JSON.
"""


def add_common_effect_args(parser: argparse.ArgumentParser) -> None:
    """The effect, the model (:class:`~portraitseg.video.ModelConfig`) and the same
    post-processing flags as ``predict``; shared by ``video`` and ``webcam``."""
    from ..video.effects import ModelConfig

    add = parser.add_argument
    add(
        "--background",
        metavar="IMAGE|VIDEO|COLOR|blur",
        help="replace the background: an image, a video (looped), a colour name/#hex, or 'blur' (default)",
    )
    add("--mask-only", action="store_true", help="output the mask (white = person) instead of a composite")
    # --smoothing/--no-smoothing (the old --no-smoothing keeps working).
    add_config_flags(parser, ModelConfig)
    add_postprocess_flags(parser)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..bench.video import BENCH_FRAMES

    parser = subparsers.add_parser(
        "video",
        help="segment a video file (background replacement, mask, RGBA frames)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("input", nargs="?", metavar="IN", help="input video file")
    add("output", nargs="?", metavar="OUT", help="output video file (.mp4 or .avi)")
    add_common_effect_args(parser)
    add("--alpha", metavar="DIR", type=Path, help="also write RGBA PNGs (frame_000000.png, ...) to DIR")
    add("--no-audio", action="store_true", help="do not copy the audio track")
    add("--bench", action="store_true", help="benchmark on a generated 1280x720 clip (IN/OUT not needed)")
    add("--bench-frames", type=int, default=BENCH_FRAMES, metavar="N",
        help="frames in the benchmark clip (default: %(default)s)")
    add(
        "--json", metavar="PATH", type=Path, help="write the run's numbers (fps, per-stage ms, codec) as JSON"
    )
    add("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def model_config(args: argparse.Namespace):
    """The :class:`~portraitseg.video.ModelConfig` the flags describe (validated)."""
    from ..video.effects import ModelConfig

    cfg = config_from_args(ModelConfig, args, postprocess=postprocess_config(args))
    cfg.validate()
    return cfg


def run(args: argparse.Namespace) -> int:
    from ..bench.video import run_video_bench
    from ..video import VideoConfig, parse_effect, process_file

    cfg = VideoConfig(
        model=model_config(args), alpha_dir=args.alpha, copy_audio=not args.no_audio, progress=not args.quiet
    )
    if args.bench:
        named = args.output or args.input  # `video --bench OUT.avi` picks the codec by extension
        ext = Path(named).suffix if named else ".mp4"
        with tempfile.TemporaryDirectory(prefix="portraitseg-bench-") as tmp:
            report = run_video_bench(Path(tmp), ext, args.bench_frames, cfg)
        _emit(report, args.json)
        return 0
    if not args.input or not args.output:
        raise ValueError("give IN and OUT (or --bench)")
    src = Path(args.input)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    cfg.effect = parse_effect(args.background, args.mask_only)
    result = process_file(src, Path(args.output), cfg)
    report = result.to_dict()
    if args.json:
        _emit(report, args.json)
    print(
        f"{args.output}: {result.frames} frames {result.size[0]}x{result.size[1]} @ {result.fps:.2f} fps, "
        f"{result.codec}; {result.throughput_fps:.1f} frames/s end to end; audio {result.audio}",
        file=sys.stderr,
    )
    if result.interrupted:
        print("interrupted: kept the frames written so far", file=sys.stderr)
        return 130
    return 0


def _emit(report: dict, path: Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n")
