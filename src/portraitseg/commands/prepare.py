"""``portraitseg prepare``: offline synthetic backgrounds -> a new images/ + alpha/ dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import requires_extra
from ..defaults import MAX_PIXELS
from ._common import add_max_pixels_flag, report_skipped


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="composite labelled people onto random backgrounds (offline)",
        description="For each labelled sample, composite the person onto K random background images "
        "(resized to cover, random crop) using its soft mask as alpha, and write OUT/images/*.jpg, "
        "OUT/alpha/*.png, OUT/train.txt and OUT/manifest.csv. OUT must be a new or empty folder, not an "
        "input. Bad files are skipped and reported (exit 1).",
    )
    p.add_argument("out", type=Path, help="output dataset folder (new or empty)")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT[:SPLIT]",
                   help="labelled dataset(s): folder, optionally with a split file relative to it")
    p.add_argument(
        "--backgrounds", type=Path, required=True, metavar="DIR", help="folder of background images"
    )
    p.add_argument("--per-image", type=int, default=2, metavar="K", help="composites per sample (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the background draws (default 0)")
    p.add_argument(
        "--portrait-crops", action="store_true", help="also write a head-and-shoulders crop of each composite"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_max_pixels_flag(p, MAX_PIXELS)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with requires_extra("train"):  # compositing reuses the torch augmentation ops
        from ..data.io import NoSamplesError
        from ..prepare import prepare
    sources = []
    for spec in args.data:
        root, _, split = spec.partition(":")
        sources.append((root, split or None))
    try:
        report = prepare(sources, args.backgrounds, args.out, args.per_image, args.seed,
                         args.portrait_crops, not args.quiet, args.max_pixels)
    except NoSamplesError as exc:
        report_skipped(exc.skipped)  # every sample was bad: say why before the one-line error
        raise
    print(f"wrote {len(report.written)} samples to {args.out}")
    return 1 if report_skipped(report.skipped) else 0
