"""``portraitseg eval``: score models (ours and peers) on labelled datasets, side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..data import open_dataset
from ..defaults import MAX_PIXELS
from ..evaluate import DEFAULT_GALLERY_K, compare, comparison_table, json_summary, write_json, write_reports
from ..runtimes import PEERS, Runtime, open_model, peer_spec
from ..runtimes.factory import BACKENDS
from ._common import add_max_pixels_flag, positive_int

DEFAULT_SPLIT = "val.txt"

DESCRIPTION = """\
Evaluate one or more models on one or more labelled datasets and print a side-by-side table
(rows = models, columns = mIoU / person IoU / boundary F1 per dataset, computed over all pixels
of the set, plus median model-call latency).

MODEL is 'default' (the bundled model on the fastest installed backend, the same as in predict;
--backend picks another), a checkpoint .pt, an exported .onnx or .tflite, or a peer name looked
up in --anchors / $PORTRAITSEG_ANCHORS / ../shared/anchors (from the working folder, then
beside the repo checkout). .tflite peers need the 'tflite' extra. Peers:
  %(peers)s

Datasets are labelled DIRNAME/SPLIT (e.g. vikram_val/val), or DIRNAME without a split.
"""

JSON_HELP = (
    "write the summary as JSON: for ONE model on ONE dataset a flat dict (miou, person_iou, "
    "background_iou, pixel_accuracy, boundary_f1, n_images, mean_per_image, latency, ...); "
    "otherwise nested {model: {dataset label: that dict}}"
)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate models (ours and peers) on labelled datasets",
        description=DESCRIPTION % {"peers": "\n  ".join(PEERS)},
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("models", nargs="*", metavar="MODEL", help="model(s) to evaluate")
    add("--data", action="append", required=True, metavar="DIR", help="dataset folder (repeatable)")
    add(
        "--split",
        metavar="FILE",
        help=f"split list, absolute or in each DIR (default: {DEFAULT_SPLIT} if there)",
    )
    add("--peers", metavar="all|NAME,NAME", help="also evaluate these peer models ('all' = every one)")
    add(
        "--anchors",
        metavar="DIR",
        help="peer-model folder (default: $PORTRAITSEG_ANCHORS, else ../shared/anchors from the working "
        "folder, else beside the repo checkout)",
    )
    add("--json", metavar="PATH", type=Path, help=JSON_HELP)
    add(
        "--out",
        metavar="DIR",
        type=Path,
        help="write per-image CSV, summary JSON/markdown, worst-image gallery",
    )
    add("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    add("--limit", type=int, metavar="N", help="evaluate only the first N images of each dataset")
    add("--threads", type=positive_int, default=1, help="inference threads per model (default 1)")
    add("--backend", choices=BACKENDS, default="auto",
        help="for MODEL default: tflite, onnx or torch (default: auto = the fastest installed)")
    add(
        "--gallery", type=int, default=DEFAULT_GALLERY_K, metavar="K", help="images in the gallery (0 = none)"
    )
    add("--skip-bad", action="store_true",
        help="skip unreadable images (listed in the summary; the exit code is then 1, as in cache/prepare)")
    add("--quiet", action="store_true", help="no progress bars")
    add_max_pixels_flag(parser, MAX_PIXELS)
    parser.set_defaults(func=run)
    return parser


def model_specs(models: list[str], peers: str | None) -> list[str]:
    """Positional models then requested peers, without duplicates."""
    specs = list(models)
    if peers:
        names = list(PEERS) if peers.strip() == "all" else [p.strip() for p in peers.split(",") if p.strip()]
        specs += [peer_spec(n).name for n in names]  # validates names before any work
    if not specs:
        raise ValueError("no model given: pass MODEL(s) and/or --peers")
    return list(dict.fromkeys(specs))


def open_datasets(dirs: list[str], split: str | None, skip_bad: bool,
                  max_pixels: int = MAX_PIXELS) -> list[tuple[str, object]]:
    """``(label, dataset)`` pairs; the label is ``<dir name>/<split stem>`` when a split is used."""
    out = []
    on_error = "skip" if skip_bad else "raise"
    for d in dirs:
        root = Path(d)
        use = split if split is not None else (DEFAULT_SPLIT if (root / DEFAULT_SPLIT).is_file() else None)
        ds = open_dataset(root, use, on_error=on_error, max_pixels=max_pixels)
        label = f"{root.resolve().name}/{Path(use).stem}" if use else root.resolve().name
        out.append((label, ds))
    if len({label for label, _ in out}) != len(out):
        raise ValueError("two --data folders have the same name and split; evaluate them separately")
    return out


def unique_names(runtimes: list[Runtime], specs: list[str]) -> None:
    """Two models with the same label (e.g. two best.pt) get their full spec as name."""
    seen: dict[str, int] = {}
    for rt in runtimes:
        seen[rt.name] = seen.get(rt.name, 0) + 1
    for rt, spec in zip(runtimes, specs):
        if seen[rt.name] > 1:
            rt.name = spec


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise ValueError("--limit must be positive")
    specs = model_specs(args.models, args.peers)
    from ..data.io import NoSamplesError

    datasets = open_datasets(args.data, args.split, args.skip_bad, args.max_pixels)
    runtimes = [open_model(s, args.backend, args.threads, args.anchors) for s in specs]
    unique_names(runtimes, specs)
    keep = max(args.gallery, 0) if args.out else 0
    try:
        results = compare(runtimes, datasets, args.threshold, not args.quiet, args.limit, keep)
    except NoSamplesError as exc:
        for msg in exc.skipped:  # every sample was bad: say why before the one-line error
            print(f"skipped: {msg}", file=sys.stderr)
        raise
    print(comparison_table(results), end="")
    skipped = 0
    for per in results.values():
        for res in per.values():
            if res.skipped:
                print(f"{res.model} | {res.dataset}: skipped {len(res.skipped)} file(s):", file=sys.stderr)
                for msg in res.skipped:
                    print(f"  {msg}", file=sys.stderr)
                skipped = max(skipped, len(res.skipped))
    if args.json:
        write_json(args.json, json_summary(results))
    if args.out:
        write_reports(results, args.out, keep)
    if skipped:
        # As cache and prepare: results were written, but a skipped file must not pass silently.
        print(f"{skipped} file(s) skipped per model: scores cover the rest (exit 1)", file=sys.stderr)
        return 1
    return 0
