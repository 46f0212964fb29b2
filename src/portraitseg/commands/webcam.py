"""``portraitseg webcam``: live segmentation from a camera, stream URL or video file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..outfiles import check_outputs
from ._common import (
    add_config_flags,
    add_overwrite_flag,
    config_from_args,
    sigterm_as_exit,
    write_errors_exit_1,
)
from .video import add_common_effect_args, background_input, emit_json, encoder_config, model_config

if TYPE_CHECKING:
    import numpy as np

DESCRIPTION = """\
Live background replacement. Capture, model and rendering run in separate threads: every
captured frame is rendered at once with the newest available mask (from a camera, rendering
never waits for the model; the model always takes the newest frame and skips the rest). A mask
computed from frame i is used for frames i-N..i+N (N = --max-mask-age); masks further away are
not used. A file read with --fast waits for a mask within N frames instead (no unmasked frames).

Rendering starts with the first mask (frames are never shown before one exists, so the
background is hidden from the first frame on).

With a display: a window (keys: b = next effect, s = smoothing on/off, m = overlay, q/Esc =
quit). Headless: --output FILE (and --max-frames N); status lines go to stderr. --output and
--json never replace the source or --background, nor an existing file unless --overwrite; the
file is written under a temp name, read back and renamed when the run ends (Ctrl-C included),
and a write failure (disk full, ...) leaves no file, prints one line and exits 1. A damaged
video file is read past the frames that do not decode; one error line counts them, exit 1.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..video.live import LiveConfig

    parser = subparsers.add_parser(
        "webcam",
        help="live segmentation from a camera, stream or file (window, file or virtual camera)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("source", nargs="?", default="0", help="camera index, stream URL or video file (default: 0)")
    add_common_effect_args(parser)
    add("--show-mask", action="store_true", help="show the mask instead of the composite")
    add("--output", metavar="FILE", type=Path,
        help="write the rendered frames to FILE (.mp4, .m4v, .mov, .avi or .mkv); headless")
    add_config_flags(parser, LiveConfig, only=("max_frames", "max_mask_age"))
    add(
        "--fast",
        action="store_true",
        help="read a video file as fast as possible (default: at its own fps, like a camera)",
    )
    add("--overlay", action="store_true", help="draw fps/latency on the output (always on in the window)")
    add(
        "--virtual-cam", action="store_true", help="also send frames to a virtual camera (needs pyvirtualcam)"
    )
    add(
        "--json",
        metavar="PATH",
        type=Path,
        help="write the run's stats (fps, mask age, per-stage ms) as JSON",
    )
    add_overwrite_flag(parser)
    parser.set_defaults(func=run)
    return parser


def has_display() -> bool:
    """A window can be opened: a display server and an OpenCV build with GUI support."""
    import cv2
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        cv2.namedWindow("portraitseg")
        return True
    except cv2.error:  # opencv-python-headless: no highgui
        return False


def _effects(first):
    """Effects the 'b' key cycles through, starting with the requested one."""
    cycle = [first, "blur", (0, 255, 0), "mask", "none"]
    seen, out = set(), []
    for e in cycle:
        key = e if isinstance(e, (str, tuple)) else id(e)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


class _VirtualCam:
    def __init__(self, width: int, height: int, fps: float) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise ValueError("--virtual-cam needs pyvirtualcam: pip install pyvirtualcam") from None
        try:
            self.cam = pyvirtualcam.Camera(width=width, height=height, fps=fps)
        except RuntimeError as exc:
            raise ValueError(f"virtual camera: {exc}") from None

    def send(self, frame: np.ndarray) -> None:
        import cv2

        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        self.cam.send(frame)


def _source_file(source: str) -> Path | None:
    """The source when it is a video file (not a camera index or a stream URL)."""
    return None if source.isdigit() or "://" in source else Path(source)


@write_errors_exit_1("webcam")
def run(args: argparse.Namespace) -> int:
    from ..video.io import quiet_ffmpeg_log
    from ..video.output import VideoOutput

    quiet_ffmpeg_log()
    mcfg = model_config(args)
    window = args.output is None and has_display()
    if args.output is None and not window and not args.virtual_cam:
        raise ValueError("no display available: give --output FILE (or --virtual-cam)")
    source = _source_file(str(args.source))
    check_outputs({"--output": args.output, "--json": args.json},
                  {"SOURCE": source, "--background": background_input(args.background)}, args.overwrite)
    # Reserved before the source is opened: an unwritable folder fails before any frame is read.
    output = VideoOutput(args.output) if args.output is not None else None
    try:
        with sigterm_as_exit():
            return _live(args, mcfg, window, source is not None, output)
    except BaseException:
        if output is not None:
            output.discard()
        raise


def _live(args: argparse.Namespace, mcfg, window: bool, is_file: bool, output) -> int:
    import cv2

    from ..video import LiveConfig, LivePipeline, draw_overlay, open_pipeline, open_source, parse_effect
    from ..video.effects import prepare_effect
    from ..video.io import SkipDamaged, damage_line

    effect = parse_effect(args.background, args.mask_only or args.show_mask)
    # A file reads past a frame that does not decode (it used to end the run there, silently);
    # a camera or stream is read as it is: a failed read there is the end.
    cap = SkipDamaged(open_source(args.source)) if is_file else open_source(args.source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 1 <= fps <= 240 else 30.0
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cfg = config_from_args(
        LiveConfig, args, only=("max_frames", "max_mask_age"),
        pace_fps=fps if (is_file and not args.fast) else None,
        drop_when_behind=not (is_file and args.fast),
    )
    cfg.validate()
    proc = open_pipeline(mcfg)
    if width > 0 and height > 0:  # a background photo scaled to the frames once, not per frame
        effect = prepare_effect(effect, (height, width))
    pipe = LivePipeline(cap, proc, effect, cfg)
    vcam = _VirtualCam(width, height, fps) if args.virtual_cam else None
    if output is not None:
        output.open(fps, (width, height), encoder_config(args))
    effects, state = _effects(effect), {"i": 0, "overlay": True}

    def sink(out: np.ndarray, info) -> bool:
        shown = (
            draw_overlay(out, pipe.status_line()) if (window and state["overlay"]) or args.overlay else out
        )
        if output is not None:
            output.write(shown)
        if vcam is not None:
            vcam.send(shown)
        if not window:
            return True
        cv2.imshow("portraitseg", shown if shown.ndim == 2 else cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        if key == ord("b"):
            state["i"] = (state["i"] + 1) % len(effects)
            pipe.effect = effects[state["i"]]
        elif key == ord("s"):
            proc.set_smoothing(not proc.smoothing)
        elif key == ord("m"):
            state["overlay"] = not state["overlay"]
        return True

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        stats = pipe.run(sink, log=None if window else log)
    except KeyboardInterrupt:  # keep what was rendered, like `video`
        stats = pipe._finish()
    finally:
        if window:
            cv2.destroyAllWindows()
    if output is not None:
        output.finish()
        output.publish()
    report = stats.to_dict()
    report["max_mask_age_limit"] = cfg.max_mask_age
    if args.json:
        emit_json(report, args.json)
    print(pipe.status_line(), file=sys.stderr)
    damage = damage_line(stats.captured, cap.unreadable) if isinstance(cap, SkipDamaged) else None
    if damage:  # the output is kept, but a script must not take it for a clean run
        print(f"portraitseg webcam: error: {args.source}: {damage}", file=sys.stderr)
        return 1
    return 0
