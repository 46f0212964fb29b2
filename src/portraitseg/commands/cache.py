"""``portraitseg cache``: decode datasets once into a compact training cache (.npz)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import INPUT_SIZE, MAX_PIXELS
from ._common import add_max_pixels_flag, add_overwrite_flag, report_skipped


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="build a training cache from dataset folders",
        description="Resize every sample (stretched) to SIZE x SIZE once and store it compactly. "
        "Give labelled datasets as ROOT or ROOT:SPLIT (split file relative to ROOT), "
        "or --images DIR for an unlabelled background folder.",
    )
    p.add_argument("out", type=Path, help="output .npz")
    add = p.add_argument
    add("--data", nargs="+", default=[], metavar="ROOT[:SPLIT]", help="labelled dataset(s), one source each")
    p.add_argument(
        "--images", type=Path, nargs="+", help="unlabelled image folder(s) (backgrounds); each is one source"
    )
    add("--size", type=int, default=INPUT_SIZE, help=f"side of the stored squares (default: {INPUT_SIZE})")
    p.add_argument(
        "--quality", type=int, default=85, help="WebP quality of the images (targets are lossless)"
    )
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable/mismatched pairs (and bad --images files) and report them (exit 1)")
    add_max_pixels_flag(p, MAX_PIXELS)
    add_overwrite_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here: `portraitseg --help` should not load OpenCV.
    from ..data.cache import build_cache, build_image_cache
    from ..data.io import NoSamplesError

    if bool(args.data) == bool(args.images):
        raise ValueError("give either --data ROOT[:SPLIT] ... or --images DIR")
    try:
        if args.images:
            skipped: list[str] = []
            out = build_image_cache(args.images, args.out, args.size, args.quality,
                                    skipped if args.skip_bad else None, args.max_pixels, args.overwrite)
        else:
            sources = []
            for spec in args.data:
                root, _, split = spec.partition(":")
                sources.append((root, split or None))
            out, skipped = build_cache(sources, args.out, args.size, args.quality,
                                       "skip" if args.skip_bad else "raise", args.max_pixels, args.overwrite)
    except NoSamplesError as exc:
        report_skipped(exc.skipped)  # every sample was bad: say why before the one-line error
        raise
    print(f"wrote {out}")
    return 1 if report_skipped(skipped) else 0
