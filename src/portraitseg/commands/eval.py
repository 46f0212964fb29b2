"""``portraitseg eval``: score models (ours and peers) on labelled datasets, side by side."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..data import open_dataset
from ..defaults import MAX_PIXELS
from ..evaluate import DEFAULT_GALLERY_K, check_threshold, compare
from ..runtimes import PEERS, open_model, peer_spec
from ..runtimes.factory import BACKENDS, DEFAULT_SPEC
from ..runtimes.peers import is_peer_name
from ._common import (
    add_max_pixels_flag,
    add_postprocess_flags,
    postprocess_config,
    thread_count,
)

DEFAULT_SPLIT = "val.txt"

DESCRIPTION = """\
Evaluate one or more models on one or more labelled datasets and print a side-by-side table
(rows = models, columns = mIoU / person IoU / boundary F1 per dataset, computed over all pixels
of the set, plus median model-call latency). Where a dataset has alpha/ (soft matte) ground
truth, the table adds the matting errors SAD, MSE, Grad and MAD of the FINAL alpha: the
model's output through the same post-processing predict applies (guided upsampling,
keep-largest; the post-processing flags below change it as in predict). Definitions and
units: docs/metrics.md.

MODEL is 'default' (the bundled model on the fastest installed backend, the same as in predict;
--backend picks another), a checkpoint .pt, an exported .onnx or .tflite, or a peer name looked
up in --anchors / $PORTRAITSEG_ANCHORS / ../shared/anchors (from the working folder, then
beside the repo checkout). .tflite peers need the 'tflite' extra. Peers:
  %(peers)s
Model files are labelled by the shortest unique end of their path (m.onnx -> m; two best.pt ->
runA/best, runB/best; a training run's best.pt/last.pt always with its run folder).

Datasets are labelled DIRNAME/SPLIT (e.g. vikram_val/val), or DIRNAME without a split.

--json and --out never replace an earlier result: an existing file is refused (before the
evaluation starts) unless --overwrite; files are written atomically.
"""

JSON_HELP = (
    "write the summary as JSON: for ONE model on ONE dataset a flat dict (miou, person_iou, "
    "background_iou, pixel_accuracy, boundary_f1, n_images, mean_per_image, latency, and 'alpha' "
    "with the matting errors on alpha datasets, ...); otherwise nested {model: {dataset label: that dict}}"
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
    add("--threshold", type=float, default=0.5,
        help="probability threshold for IoU and BF1, in (0, 1) (default 0.5)")
    add("--limit", type=int, metavar="N", help="evaluate only the first N images of each dataset")
    add("--threads", type=thread_count, default=1, help="inference threads per model (default 1)")
    add("--backend", choices=BACKENDS, default="auto",
        help="for MODEL default: tflite, onnx or torch (default: auto = the fastest installed)")
    add(
        "--gallery", type=int, default=DEFAULT_GALLERY_K, metavar="K", help="images in the gallery (0 = none)"
    )
    add("--skip-bad", action="store_true",
        help="skip unreadable images (listed in the summary; the exit code is then 1, as in cache/prepare)")
    add("--overwrite", action="store_true",
        help="replace an existing --json file or --out reports (default: refuse, as predict does)")
    add("--quiet", action="store_true", help="no progress bars")
    add_max_pixels_flag(parser, MAX_PIXELS)
    add_postprocess_flags(parser)
    parser.set_defaults(func=run)
    return parser


def _is_file_spec(spec: str) -> bool:
    return spec != DEFAULT_SPEC and not is_peer_name(spec)


def _norm_path(spec: str) -> str:
    """Absolute, with ``.``/``..`` removed (symbolic links kept: the name the user gave counts)."""
    return os.path.normpath(Path(spec).absolute())


def model_specs(models: list[str], peers: str | None) -> list[str]:
    """Positional models then requested peers, without duplicates (the same file given twice,
    however spelled, is evaluated once)."""
    specs = list(models)
    if peers:
        names = list(PEERS) if peers.strip() == "all" else [p.strip() for p in peers.split(",") if p.strip()]
        specs += [peer_spec(n).name for n in names]  # validates names before any work
    if not specs:
        raise ValueError("no model given: pass MODEL(s) and/or --peers")
    seen: set[str] = set()
    unique = []
    for spec in specs:
        key = _norm_path(spec) if _is_file_spec(spec) else spec
        if key not in seen:
            seen.add(key)
            unique.append(spec)
    return unique


def _label_candidates(spec: str) -> list[str]:
    """Ever longer ends of the path, each first without then with the file's suffix
    (``m``, ``m.onnx``, ``exp/m``, ``exp/m.onnx``, ...). A training run's ``best.pt`` and
    ``last.pt`` start with their run folder: every run has one, so the name alone says nothing."""
    from ..train.rundir import RUN_FILES

    path = Path(_norm_path(spec))
    parts = path.parts[1:] if path.anchor else path.parts
    first = 2 if path.name in RUN_FILES and len(parts) > 1 else 1
    out: list[str] = []
    for k in range(first, len(parts) + 1):
        head = "/".join(parts[-k:-1])
        out += [f"{head}/{path.stem}" if head else path.stem, "/".join(parts[-k:])]
    return list(dict.fromkeys(out)) or [str(path)]


def model_labels(specs: list[str]) -> list[str]:
    """A short, unique label per model: 'default' and peer names as they are; a file the
    shortest end of its path that no other model could be labelled (tables, JSON, report folders)."""
    candidates = {s: _label_candidates(s) for s in specs if _is_file_spec(s)}
    labels = []
    for spec in specs:
        if spec not in candidates:
            labels.append(spec)
            continue
        taken = {s for s in specs if s not in candidates}
        taken |= {c for other, cs in candidates.items() if other != spec for c in cs}
        labels.append(next((c for c in candidates[spec] if c not in taken), _norm_path(spec)))
    return labels


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


def check_report_paths(args: argparse.Namespace, labels: list[str], datasets: list[tuple[str, object]],
                       gallery: int, inputs: list[tuple[str, Path]]) -> None:
    """Before any model runs: refuse what writing the results would refuse or fail on later
    (an existing result without --overwrite, a read-only or missing-permission folder) and a
    result that would replace an input (a model file, a split file), even with --overwrite."""
    from ..outfiles import check_outputs
    from ..reports import report_paths

    outputs: list[tuple[str, Path | None]] = [("--json", args.json)]
    if args.out:
        paths = report_paths(labels, [label for label, _ in datasets], args.out, gallery)
        outputs += [("--out", p) for p in paths]
    check_outputs(outputs, inputs, args.overwrite, make_folders=True)


def eval_inputs(specs: list[str], datasets: list[tuple[str, object]]) -> list[tuple[str, Path]]:
    """The files eval reads that a result must never replace: model files and split files."""
    models = [("MODEL", Path(s)) for s in specs if Path(s).is_file()]
    splits = [("--split", ds.split_path) for _, ds in datasets if getattr(ds, "split_path", None)]
    return models + splits


def write_results(args: argparse.Namespace, results: dict, gallery: int) -> None:
    """The JSON summary and the reports, all checked against earlier results before any is
    written (:mod:`portraitseg.outfiles`, the rule predict follows)."""
    from ..outfiles import write_results as write_checked
    from ..reports import json_bytes, json_summary, report_files

    files = {args.json: json_bytes(json_summary(results))} if args.json else {}
    if args.out:
        files.update(report_files(results, args.out, gallery))
    plan = write_checked(files, args.overwrite)
    if plan.unchanged:
        print(f"{len(plan.unchanged)} result file(s) already up to date", file=sys.stderr)


def report_skipped(results: dict) -> int:
    """List each model/dataset's skipped files; returns the most skipped by one model."""
    skipped = 0
    for per in results.values():
        for res in per.values():
            if res.skipped:
                print(f"{res.model} | {res.dataset}: skipped {len(res.skipped)} file(s):", file=sys.stderr)
                for msg in res.skipped:
                    print(f"  {msg}", file=sys.stderr)
                skipped = max(skipped, len(res.skipped))
    return skipped


def run(args: argparse.Namespace) -> int:
    from ..data.io import NoSamplesError
    from ..reports import comparison_table
    from ._common import sigterm_as_exit

    threshold = check_threshold(args.threshold, "--threshold")
    if args.limit is not None and args.limit <= 0:
        raise ValueError("--limit must be positive")
    postprocess = postprocess_config(args)
    specs = model_specs(args.models, args.peers)
    labels = model_labels(specs)
    datasets = open_datasets(args.data, args.split, args.skip_bad, args.max_pixels)
    keep = max(args.gallery, 0) if args.out else 0
    check_report_paths(args, labels, datasets, keep, eval_inputs(specs, datasets))
    runtimes = [open_model(s, args.backend, args.threads, args.anchors, name=label)
                for s, label in zip(specs, labels)]
    with sigterm_as_exit():  # a killed run leaves no temporary result file behind
        try:
            results = compare(runtimes, datasets, threshold, not args.quiet, args.limit, keep, postprocess)
        except NoSamplesError as exc:
            for msg in exc.skipped:  # every sample was bad: say why before the one-line error
                print(f"skipped: {msg}", file=sys.stderr)
            raise
        print(comparison_table(results), end="")
        skipped = report_skipped(results)
        write_results(args, results, keep)
    if skipped:
        # As cache and prepare: results were written, but a skipped file must not pass silently.
        print(f"{skipped} file(s) skipped per model: scores cover the rest (exit 1)", file=sys.stderr)
        return 1
    return 0
