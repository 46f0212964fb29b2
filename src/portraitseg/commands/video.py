"""``portraitseg video IN OUT``: segment every frame of a video file and write an effect."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from ..outfiles import check_outputs, same_file
from ._common import (
    add_config_flags,
    add_overwrite_flag,
    add_postprocess_flags,
    config_from_args,
    positive_int,
    postprocess_config,
    sigterm_as_exit,
    write_errors_exit_1,
)

DESCRIPTION = """\
Segment every frame of IN and write OUT with the same size and frame rate. The codec follows
OUT's extension: .mp4/.m4v/.mov -> H.264 through ffmpeg when installed (else mp4v, MPEG-4 Part
2, with a warning), .avi/.mkv -> MJPG. A variable-frame-rate IN is written at its average rate,
frames repeated or dropped by their timestamps so that the picture stays in sync with the
audio. OpenCV's encoders drop the last column/row of an odd frame size (the summary says so).
Audio is copied with ffmpeg when it is installed.

Outputs (OUT, --json, --alpha frames) never replace an input, nor an existing file unless
--overwrite; the output folder must be writable before anything is decoded. OUT is written to a
temp file, read back and renamed at the end: a failure (disk full, an encoder that stopped)
leaves no OUT, prints one line and exits 1. Ctrl-C keeps the frames done so far (a playable
file), unless OUT was there already (--overwrite): that earlier file is kept instead; a second
Ctrl-C stops at once and keeps nothing. A damaged or truncated IN: the frames that decode are
written, one error line says how many did not, exit 1.

--bench measures end-to-end frames/s on a generated 1280x720 clip (decode + model + smoothing
+ background replacement + encode), prints each stage's CPU ms per frame as a table on stderr
and the numbers as JSON (stdout, or --json).
"""


def add_common_effect_args(parser: argparse.ArgumentParser) -> None:
    """The effect, the model (:class:`~portraitseg.video.ModelConfig`) and the same
    post-processing flags as ``predict``; shared by ``video`` and ``webcam``."""
    from ..colour import COLOUR_SYNTAX
    from ..video.effects import ModelConfig

    add = parser.add_argument
    add(
        "--background",
        metavar="IMAGE|VIDEO|COLOR|blur",
        help=f"replace the background: an image, a video (looped), a colour ({COLOUR_SYNTAX}), or 'blur' "
        "(default)",
    )
    add("--mask-only", action="store_true", help="output the mask (white = person) instead of a composite")
    # --smoothing/--no-smoothing (the old --no-smoothing keeps working).
    add_config_flags(parser, ModelConfig)
    add_postprocess_flags(parser)
    add_encoder_flags(parser)


def add_encoder_flags(parser: argparse.ArgumentParser) -> None:
    """x264 settings of .mp4/.m4v/.mov outputs (:class:`~portraitseg.video.writer.EncoderConfig`)."""
    from ..video.writer import EncoderConfig

    add_config_flags(parser.add_argument_group("H.264 output (defaults: EncoderConfig)"), EncoderConfig)


def encoder_config(args: argparse.Namespace):
    """The :class:`~portraitseg.video.writer.EncoderConfig` the flags describe (validated)."""
    from ..video.writer import EncoderConfig

    return config_from_args(EncoderConfig, args)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..bench.video import BENCH_FRAMES, BENCH_INPUTS
    from ..video.io import CODECS

    parser = subparsers.add_parser(
        "video",
        help="segment a video file (background replacement, mask, RGBA frames)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("input", nargs="?", metavar="IN", help="input video file")
    add("output", nargs="?", metavar="OUT",
        help=f"output video file: {', '.join(CODECS)} (the codec follows the extension)")
    add_common_effect_args(parser)
    add("--alpha", metavar="DIR", type=Path, help="also write RGBA PNGs (frame_000000.png, ...) to DIR")
    add("--no-audio", action="store_true", help="do not copy the audio track")
    add("--bench", action="store_true", help="benchmark on a generated 1280x720 clip (IN/OUT not needed)")
    add("--bench-frames", type=positive_int, default=BENCH_FRAMES, metavar="N",  # 0 was an IndexError
        help="frames in the benchmark clip (default: %(default)s)")
    add("--bench-input", choices=BENCH_INPUTS, default="mjpg",
        help="the benchmark clip's codec (default: %(default)s; h264 needs ffmpeg)")
    add(
        "--json", metavar="PATH", type=Path,
        help="write the run's numbers (fps, per-stage ms, codec) as JSON to PATH (--bench without "
        "--json prints them)"
    )
    add("--quiet", action="store_true", help="no progress bar")
    add_overwrite_flag(parser)
    parser.set_defaults(func=run)
    return parser


def model_config(args: argparse.Namespace):
    """The :class:`~portraitseg.video.ModelConfig` the flags describe (validated)."""
    from ..video.effects import ModelConfig

    cfg = config_from_args(ModelConfig, args, postprocess=postprocess_config(args))
    cfg.validate()
    return cfg


def background_input(background: str | None) -> Path | None:
    """``--background`` when it names a file (an image or video that is read while writing)."""
    return Path(background) if background and Path(background).is_file() else None


def _check_alpha_dir(folder: Path | None, inputs: dict[str, Path | None], outputs: dict[str, Path | None],
                     overwrite: bool) -> None:
    """--alpha DIR: refuse another output's name, a file, earlier frames (unless --overwrite)
    and an input among the frame names (never replaced)."""
    from ..video.output import ALPHA_FRAME

    if folder is None:
        return
    for label, out in outputs.items():
        if out is not None and same_file(folder, out):
            raise ValueError(f"--alpha {folder} is also {label}; give them different names")
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"--alpha {folder} is a file; give a folder")
    for label, src in inputs.items():
        if src is not None and ALPHA_FRAME.fullmatch(src.name) and same_file(src.parent, folder):
            raise ValueError(f"--alpha {folder} holds the input {label} ({src}); give another folder")
    frames = [p for p in folder.iterdir() if ALPHA_FRAME.fullmatch(p.name)]
    if frames and not overwrite:
        raise ValueError(f"--alpha {folder} already holds {len(frames)} frame_*.png (use --overwrite to "
                         "replace them)")


@write_errors_exit_1("video")
def run(args: argparse.Namespace) -> int:
    from ..bench.video import run_video_bench, stage_table
    from ..video import VideoConfig, parse_effect, process_file
    from ..video.io import check_input_file, quiet_ffmpeg_log

    quiet_ffmpeg_log()
    cfg = VideoConfig(
        model=model_config(args), encoder=encoder_config(args), alpha_dir=args.alpha,
        copy_audio=not args.no_audio, progress=not args.quiet,
    )
    if args.bench:
        check_outputs({"--json": args.json}, {}, args.overwrite)
        named = args.output or args.input  # `video --bench OUT.avi` picks the codec by extension
        ext = Path(named).suffix if named else ".mp4"
        with tempfile.TemporaryDirectory(prefix="portraitseg-bench-") as tmp:
            report = run_video_bench(Path(tmp), ext, args.bench_frames, cfg, args.bench_input)
        print(stage_table(report), file=sys.stderr)
        emit_json(report, args.json)
        return 0
    if not args.input or not args.output:
        raise ValueError("give IN and OUT (or --bench)")
    src, dst = check_input_file(args.input), Path(args.output)
    inputs = {"IN": src, "--background": background_input(args.background)}
    outputs = {"OUT": dst, "--json": args.json}
    check_outputs(outputs, inputs, args.overwrite)
    _check_alpha_dir(args.alpha, inputs, outputs, args.overwrite)
    cfg.effect = parse_effect(args.background, args.mask_only)
    with sigterm_as_exit():  # a `kill` deletes the unfinished temp file like a failure does
        result = process_file(src, dst, cfg)
    if args.json:
        emit_json(result.to_dict(), args.json)
    if not result.published:
        print(f"interrupted: {dst} kept as it was (an earlier file); the {result.frames} frames done were "
              "not kept", file=sys.stderr)
        return 130
    print(_summary(dst, result), file=sys.stderr)
    if result.interrupted:
        print("interrupted: kept the frames written so far", file=sys.stderr)
        return 130
    damage = result.input_damage()
    if damage:  # OUT is kept (all the input holds), but a batch must not take it for a clean run
        print(f"portraitseg video: error: {src}: {damage}", file=sys.stderr)
        return 1
    return 0


def _summary(dst: Path, result) -> str:
    """The one-line report, true to what was written (size and frame count included)."""
    w, h = result.size
    size = f"{w}x{h}"
    if result.size != result.size_in:
        size = f"{result.size_in[0]}x{result.size_in[1]} written as {size}"
    frames = f"{result.frames} frames"
    if result.resampled:
        frames += f" (variable frame rate: {result.frames_in} input frames resampled by timestamp)"
    return (f"{dst}: {frames} {size} @ {result.fps:.2f} fps, {result.codec}; "
            f"{result.throughput_fps:.1f} frames/s end to end; audio {result.audio}")


def emit_json(report: dict, path: Path | None) -> None:
    """The JSON report: to ``path`` (atomically) when given, else to stdout."""
    from ..data.io import write_atomic

    text = json.dumps(report, indent=2)
    if path is None:
        print(text)
        return
    try:
        write_atomic(path, (text + "\n").encode())
    except OSError as exc:  # a failed write() names no file: say which
        raise OSError(f"--json {path}: {exc.strerror or exc}") from None
