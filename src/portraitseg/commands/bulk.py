"""``portraitseg bulk``: ``predict``'s outputs, names and rules, computed by a Ray Data pipeline
on a local or multi-node Ray cluster (``pip install 'portraitseg[ray]'``; see docs/scale.md)."""

from __future__ import annotations

import argparse
import sys

from . import predict
from ._common import positive_int, thread_count
from .predict_record import RECORD_NAME

DESCRIPTION = f"""\
Segment the person in each INPUT like `portraitseg predict` (the same --output kinds, file
names, folder structure and rules: inputs are never overwritten, an output with other content
is refused unless --overwrite, a bad file is reported as 'path: problem' and skipped, exit 1),
but as a Ray Data pipeline: read/decode -> segment in a pool of actors that each load the
model once -> encode -> write, on this machine or on the Ray cluster at --address (inputs and
OUTDIR must then be on a file system every node sees at the same path).

Resumable with predict's own record (OUTDIR/{RECORD_NAME}): a rerun skips every image
whose outputs are up to date (same input bytes, model, options and version, outputs unchanged
since) without decoding it or running the model, so a job killed halfway finishes the rest
only; bulk and predict resume each other's runs.
"""


def _predict_parser() -> argparse.ArgumentParser:
    # predict's own parser, so bulk takes exactly its options (one definition of each).
    return predict.add_parser(argparse.ArgumentParser().add_subparsers())


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "bulk",
        help="segment many images on a Ray cluster (predict's outputs, resumable)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_predict_parser()],
        conflict_handler="resolve",  # -h and --threads below replace predict's
    )
    add = parser.add_argument
    add("--threads", type=thread_count, default=1, metavar="N",
        help="model threads per actor (default: %(default)s)")
    add("--actors", type=positive_int, default=None, metavar="N",
        help="segmenting actors, each with its own model (default: 3/4 of the cluster's CPUs / --threads)")
    add("--batch-size", type=positive_int, default=None, metavar="N",
        help="images per actor call (default: enough batches for 4 per actor, at most 16)")
    add("--address", default=None, metavar="ADDR",
        help="Ray cluster to run on: 'auto', HOST:6379 or ray://HOST:10001 (default: $RAY_ADDRESS, "
             "else a local Ray instance on this machine's CPUs)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..bulk import BulkSettings, BulkSummary, FileJob, Resources
    from ..bulk import run as run_bulk
    from ..bulk.runner import import_ray
    from ..cli import CLIError, install_hint
    from ..inference import parse_background
    from ..outfiles import STOPPED_LINE, OutOfSpace
    from ._common import postprocess_config, sigterm_as_exit

    try:
        ray = import_ray()
    except ModuleNotFoundError as exc:  # missing_extra's line (cli.EXTRA_FOR_MODULE has no "ray")
        raise CLIError(f"{exc.name} is not installed; this command needs the 'ray' extra: "
                       f"{install_hint('ray')}") from None
    kinds = tuple(dict.fromkeys(args.output or ["mask"]))
    settings = BulkSettings(
        model=args.model, backend=args.backend, postprocess=postprocess_config(args),
        background=parse_background(args.background, args.max_pixels) if "composite" in kinds else "blur",
        max_pixels=args.max_pixels,
    )
    job = FileJob(args.inputs, args.outdir, kinds, args.composite_format, args.overwrite,
                  progress=not args.no_progress)
    resources = Resources(actors=args.actors, threads=args.threads, batch_size=args.batch_size)
    summary = BulkSummary()
    try:
        with sigterm_as_exit():
            run_bulk(job, settings, resources, args.address, summary)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM via sigterm_as_exit
        if summary.total:
            predict.report(summary, args.outdir, interrupted=(summary.reached, summary.total))
        raise
    except OutOfSpace:  # the output disk is full or read-only: the job stopped, as predict does
        predict.report(summary, args.outdir, interrupted=(summary.reached, summary.total),
                       stopped=STOPPED_LINE)
        return 1
    except Exception as exc:
        # A Ray failure (a node lost, a worker that cannot start...); Ray's task errors also
        # subclass the worker's exception type, so they are told apart by their origin.
        if not (isinstance(exc, ray.exceptions.RayError) or type(exc).__module__.startswith("ray.")):
            raise
        raise CLIError(f"the Ray job failed: {_last_line(exc)}") from exc
    predict.report(summary, args.outdir)
    if summary.workers:
        print(summary.rate_line(), file=sys.stderr)
    return 1 if summary.failed else 0


def _last_line(exc: BaseException) -> str:
    """Ray's errors carry the worker's whole traceback; its last line says what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
