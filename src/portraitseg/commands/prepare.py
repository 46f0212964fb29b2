"""``portraitseg prepare``: offline synthetic backgrounds -> a new images/ + alpha/ dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import requires_extra


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare",
        help="composite labelled people onto random backgrounds (offline)",
        description="For each labelled sample, composite the person onto K random background images "
        "(resized to cover, random crop) using its soft mask as alpha, and write OUT/images/*.jpg, "
        "OUT/alpha/*.png, OUT/train.txt and OUT/manifest.csv. Bad files are skipped and reported "
        "(exit 1).",
    )
    p.add_argument("out", type=Path, help="output dataset folder")
    p.add_argument("--data", nargs="+", required=True, metavar="ROOT[:SPLIT]")
    p.add_argument(
        "--backgrounds", type=Path, required=True, metavar="DIR", help="folder of background images"
    )
    p.add_argument("--per-image", type=int, default=2, metavar="K", help="composites per sample (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the background draws (default 0)")
    p.add_argument(
        "--portrait-crops", action="store_true", help="also write a head-and-shoulders crop of each composite"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with requires_extra("train"):  # compositing reuses the torch augmentation ops
        from ..prepare import prepare
    sources = []
    for spec in args.data:
        root, _, split = spec.partition(":")
        sources.append((root, split or None))
    report = prepare(
        sources, args.backgrounds, args.out, args.per_image, args.seed, args.portrait_crops, not args.quiet
    )
    print(f"wrote {len(report.written)} samples to {args.out}")
    for msg in report.skipped:
        print(f"skipped: {msg}", file=sys.stderr)
    if report.skipped:
        print(f"{len(report.skipped)} file(s) skipped", file=sys.stderr)
        return 1
    return 0
