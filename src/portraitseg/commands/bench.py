"""``portraitseg bench``: per-stage latency of the 1280x720 video pipeline, ours vs peers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._common import add_overwrite_flag

DESCRIPTION = """\
Time one 1280x720 frame through decode -> preprocess -> model -> post-process (default
PostprocessConfig) -> composite (blurred background), per stage (median of --repeats), for our
model in each --formats and for the --peers, at each --threads count, in one run. Also times
each post-processing option alone. fp16/int8 ONNX and TFLite are exported on the fly into a
temporary folder; int8 needs --calib-data, TFLite needs litert-torch (both noted if missing).
"speed vs mediapipe_selfie_256" is MediaPipe selfie (256)'s total time divided by this row's
(>1 = faster); the "(min)" columns use each case's fastest chain run, the estimate least
disturbed by other processes on a shared machine.
"""


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    """Comma-separated thread counts, each 1 .. MAX_THREADS (as every --threads flag)."""
    from ._common import thread_count

    return [thread_count(t) for t in _csv(text)]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..bench import FORMATS, REFERENCE_PEER

    parser = subparsers.add_parser(
        "bench",
        help="per-stage latency of the video pipeline, ours vs peers",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--models", type=_csv, default=["default"], help="'default' and/or .pt checkpoints (comma-separated)")
    add(
        "--formats",
        type=_csv,
        default=["torch", "onnx"],
        help=f"comma-separated of {','.join(FORMATS)} (default: torch,onnx)",
    )
    add(
        "--peers",
        type=_csv,
        default=[REFERENCE_PEER],
        help=f"peer models, comma-separated; '' for none (default: {REFERENCE_PEER})",
    )
    add("--threads", type=_ints, default=[1], help="thread counts, comma-separated (default: 1)")
    add(
        "--image",
        type=Path,
        help="frame source, fitted and padded to 1280x720 (default: bundled astronaut.jpg)",
    )
    add("--repeats", type=int, default=30, help="timed runs per stage (median; default: 30)")
    add(
        "--rounds",
        type=int,
        default=5,
        help="interleave the cases in this many passes, so all see the same machine load (default: 5)",
    )
    add(
        "--json", type=Path, metavar="PATH", help="write {model/format/threads: {stage_ms..., total_ms, fps}}"
    )
    add("--calib-data", metavar="DIR", help="calibration photos for onnx-int8")
    add_overwrite_flag(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..bench import markdown_table, options_table, run_bench
    from ..data.io import write_atomic
    from ..outfiles import check_outputs

    if args.json:  # an earlier result is kept, and an unwritable one fails now, not after the run
        check_outputs({"--json": args.json}, overwrite=args.overwrite, make_folders=True)
    report = run_bench(
        args.models,
        args.formats,
        args.peers,
        args.threads,
        args.image,
        args.repeats,
        args.calib_data,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        rounds=args.rounds,
    )
    print(f"frame: {report.frame}; median of {args.repeats} runs per stage\n")
    print(markdown_table(report))
    if report.options_ms:
        print()
        print(options_table(report))
    for note in report.notes:
        print(f"note: {note}")
    if args.json:
        write_atomic(args.json, (json.dumps(report.to_json(), indent=2) + "\n").encode())
    return 0
