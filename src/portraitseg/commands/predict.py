"""``portraitseg predict``: masks, cut-outs, composites and preview grids for image files."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..colour import COLOUR_SYNTAX
from ..data.datasets import IMAGE_SUFFIXES, not_a_file
from ..data.io import one_line
from ..defaults import MAX_PIXELS
from ..outfiles import (
    STOPPED_LINE,
    OutOfSpace,
    OutputClaims,
    WriteError,
    check_folder,
    plan_writes,
    write_files,
)
from ..runtimes.factory import BACKENDS
from ._common import MODEL_HELP, add_postprocess_flags, positive_int, postprocess_config, thread_count
from .predict_record import RECORD_NAME, Record, file_digest, recipe_digest

DEFAULT_OUTDIR = Path("portraitseg-out")
# What predict writes per image: the pipeline's renders plus a preview grid.
WRITE_KINDS = ("mask", "cutout", "composite", "grid")
GLOB_CHARS = "*?["
CHECKER_PX = 16  # checkerboard square behind the grid's cut-out panel
PROBE = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"  # see model_fingerprint

DESCRIPTION = f"""\
Segment the person in each INPUT and write, per image and per --output kind:
  mask       <stem>.mask.png       8-bit alpha matte
  cutout     <stem>.cutout.png     RGBA, the matte as alpha
  composite  <stem>.composite.jpg  person over --background (jpg, or png with --composite-format png)
  grid       <stem>.grid.jpg       input | mask | cut-out on a checkerboard, side by side

INPUT: image files, folders (searched recursively; the relative folder structure is kept
under OUTDIR) or glob patterns (quote them; ** is recursive); folders and globs skip earlier
outputs (*.mask.png, ...). Inputs are never overwritten; an existing output with the same
content is left as it is (so rerunning a command succeeds), one with different content is
refused unless --overwrite. A bad file is reported as 'path: problem' and skipped; the exit
code is then 1. A full or read-only output disk stops the run (one line; rerun to finish).

Rerunning (e.g. after Ctrl-C) skips every image whose outputs are up to date -- same input
bytes, model, options and portraitseg version, outputs unchanged since -- without decoding it
or running the model; what was finished is recorded in OUTDIR/{RECORD_NAME}.
"""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Job:
    """One input image and the folder (relative to OUTDIR) its outputs go to."""

    path: Path
    rel_dir: Path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def is_own_output(path: Path) -> bool:
    """``x.mask.png``, ``x.grid.jpg``...: what an earlier predict wrote (segmenting it again gives
    ``x.mask.mask.png``)."""
    return Path(path.stem).suffix.lstrip(".") in WRITE_KINDS


def _folder_jobs(path: Path, outdir: Path, errors: list[str]) -> tuple[list[Job], int]:
    from ..data.datasets import find_images

    if path.resolve() == outdir.resolve() or _inside(path, outdir):
        raise ValueError(f"{path}: input folder is the output folder (-o {outdir}) or inside it; "
                         "give another -o")
    found, bad_links = find_images(path)
    errors += bad_links
    # Skip OUTDIR when it sits inside the input folder: a rerun must not segment its own outputs.
    files = [p for p in found if not _inside(p, outdir)]
    kept = [p for p in files if not is_own_output(p)]
    return [Job(p, p.parent.relative_to(path)) for p in kept], len(files) - len(kept)


def collect_inputs(specs: list[str], outdir: Path) -> tuple[list[Job], list[str]]:
    """Expand files/folders/globs into jobs; unmatched specs become error lines. Folders and globs
    skip our own earlier outputs (named file inputs are taken as given)."""
    jobs: list[Job] = []
    errors: list[str] = []
    own = 0
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found, skipped = _folder_jobs(path, outdir, errors)
            jobs += found
            own += skipped
        elif path.is_file():
            jobs.append(Job(path, Path()))
        elif (problem := not_a_file(path)) is not None:  # a FIFO, a broken link: never opened
            errors.append(problem)
        elif any(c in spec for c in GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            errors += [e for m in matches if _is_image(m) and (e := not_a_file(m)) is not None]
            kept = [m for m in files if not is_own_output(m)]
            own += len(files) - len(kept)
            if not files:
                errors.append(f"{spec}: no image files match")
            jobs += [Job(p, Path()) for p in kept]
        else:
            errors.append(f"{spec}: no such file or folder")
    if own:
        print(f"note: skipped {own} earlier predict output file(s) (*.mask.png, *.grid.jpg, ...)",
              file=sys.stderr)
    return _once(jobs), list(dict.fromkeys(errors))


def _once(jobs: list[Job]) -> list[Job]:
    """Each file once per output folder, as first given: a photo named twice (``a.jpg *.jpg``,
    a folder and a glob over it, ``./x/../x/a.jpg``) is one image, not a clash of its outputs
    with themselves."""
    first: dict[tuple[Path, Path], Job] = {}
    for job in jobs:
        first.setdefault((job.path.resolve(), job.rel_dir), job)
    return list(first.values())


# --------------------------------------------------------------------------- outputs


def output_paths(job: Job, outdir: Path, kinds: list[str], composite_ext: str) -> dict[str, Path]:
    ext = {"mask": ".png", "cutout": ".png", "composite": f".{composite_ext}", "grid": ".jpg"}
    folder = outdir / job.rel_dir
    return {k: folder / f"{job.path.stem}.{k}{ext[k]}" for k in kinds}


def checkerboard(h: int, w: int, square: int = CHECKER_PX) -> np.ndarray:
    y, x = np.indices((h, w))
    light = ((y // square + x // square) % 2).astype(bool)
    board = np.where(light, np.uint8(204), np.uint8(153))
    return np.repeat(board[..., None], 3, axis=2)


def make_grid(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The original project's preview: input | mask | cut-out over a checkerboard."""
    from .. import postprocess as pp

    h, w = alpha.shape
    mask_rgb = np.repeat(pp.to_u8(alpha)[..., None], 3, axis=2)
    on_checker = pp.composite(image, alpha, checkerboard(h, w))
    return np.concatenate([image, mask_rgb, on_checker], axis=1)


# --------------------------------------------------------------------------- command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="segment images: masks, cut-outs, composites, preview grids",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob")
    add("-o", "--outdir", type=Path, default=DEFAULT_OUTDIR,
        help=f"output folder (default: ./{DEFAULT_OUTDIR})")
    add("--output", action="append", choices=WRITE_KINDS, help="what to write (repeatable; default: mask)")
    add("--background", default="blur", metavar="PATH|COLOUR|blur",
        help=f"composite background: an image file, a colour ({COLOUR_SYNTAX}) or blur (default: blur)")
    add("--composite-format", choices=("jpg", "png"), default="jpg",
        help="composite file type (default: jpg)")
    add("--model", default="default", help=f"{MODEL_HELP} (default: %(default)s)")
    add("--backend", choices=BACKENDS, default="auto",
        help="for --model default: LiteRT, ONNX Runtime or PyTorch (default: auto = the fastest installed: "
             "tflite, else onnx)")
    add("--threads", type=thread_count, default=None, help="inference threads (default: backend default)")
    add("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
        help="refuse images (and --background) larger than N pixels, read from the header before "
             "decoding (default: %(default)s)")
    add("--overwrite", action="store_true",
        help="recompute every image and replace existing outputs whose content differs (identical ones "
             "are always kept as they are)")
    add("--no-progress", action="store_true", help="no progress bar")
    add_postprocess_flags(parser)
    parser.set_defaults(func=run)
    return parser


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    written: int = 0
    unchanged: int = 0  # output files already up to date
    skipped: int = 0  # images not recomputed (all their outputs up to date)


def gather_jobs(specs: list[str], outdir: Path) -> tuple[list[Job], list[str]]:
    """The jobs of a predict-style run (predict, bulk): OUTDIR checked writable (a read-only
    mount is one line before any work, not one error per image), inputs expanded, unmatched
    specs printed as error lines, stale temporary files of killed runs removed; no input at all
    is an error."""
    check_folder(f"-o {outdir}", outdir, make_folders=True)
    jobs, errors = collect_inputs(specs, outdir)
    for line in errors:
        print(one_line(line), file=sys.stderr)
    if not jobs:
        raise ValueError("no input images found")
    clean_stale_temps(outdir)
    return jobs, errors


def job_claims(jobs: list[Job]) -> OutputClaims:
    """The run's :class:`~portraitseg.outfiles.OutputClaims`, knowing every input file."""
    claims = OutputClaims()
    claims.add_inputs(("INPUT", j.path) for j in jobs)
    return claims


def check_job_outputs(paths: dict[str, Path], claims: OutputClaims, job: Job) -> None:
    """Refuse (before rendering) an output of ``job`` that is an input or another image's
    output (links resolved). Whether it exists is decided later, by content (write_outputs)."""
    claims.claim((("output", p) for p in paths.values()), owner=f"the output of {job.path}")


def render_all(job: Job, segmenter, paths: dict[str, Path], background: object) -> dict[Path, bytes]:
    """Every output of one image, encoded (nothing written yet)."""
    from ..data.io import encode_image

    pred = segmenter.predict(job.path)
    encoded: dict[Path, bytes] = {}
    for kind, out in paths.items():
        if kind == "grid":
            image = make_grid(pred.image, pred.alpha)
        else:
            image = segmenter.render(pred, kind, background)
        encoded[out] = encode_image(image, out.suffix, what=kind)
    return encoded


def write_outputs(encoded: dict[Path, bytes], overwrite: bool, summary: Summary) -> None:
    """Write what changed. An existing output with the same bytes is left alone (so a rerun of
    the same command succeeds); one with different content is refused unless ``overwrite``,
    before anything of this image is written."""
    plan = plan_writes(encoded, overwrite)
    summary.unchanged += len(plan.unchanged)
    for out, data in plan.todo.items():
        write_files({out: data})  # a failure names the output file (WriteError)
        summary.written += 1  # counted per file, so a failure mid-image still reports the truth


def clean_stale_temps(outdir: Path) -> None:
    from ..data.io import is_temp_file

    if not outdir.is_dir():
        return
    stale = [p for p in outdir.rglob(".*.tmp") if is_temp_file(p) and is_own_output(Path(p.name[1:-4]))]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        print(f"note: removed {len(stale)} temporary file(s) left by an interrupted run in {outdir}",
              file=sys.stderr)


# --------------------------------------------------------------------------- skipping finished work


def model_fingerprint(segmenter) -> str:
    """The model identified by what it does: the hash of its mask of the bundled sample photo.
    One inference covers the weights, the backend and its library version, pre- and
    post-processing, however the model was named (bundled, a file, a peer). Deterministic:
    the same hash at 1 and 2 threads, for tflite and onnx each."""
    from ..inference import load_image

    # Read here at the default pixel limit: --max-pixels is about the user's images, not ours.
    return hashlib.sha256(segmenter.mask(load_image(PROBE)).tobytes()).hexdigest()


def _background_id(background: object) -> object:
    if isinstance(background, np.ndarray):
        return [list(background.shape), hashlib.sha256(background.tobytes()).hexdigest()]
    return background  # "blur", an (r, g, b) tuple or None


def output_recipes(kinds: list[str], segmenter, cfg: object, background: object) -> dict[str, str]:
    """kind -> the digest of everything besides the input that decides that output's bytes
    (:mod:`.predict_record`)."""
    from .. import __version__

    base = {"version": __version__, "model": model_fingerprint(segmenter),
            "postprocess": dataclasses.asdict(cfg)}
    background_id = _background_id(background)
    # Only the composite depends on the background: changing it leaves masks up to date.
    return {k: recipe_digest({**base, "kind": k, "background": background_id if k == "composite" else None})
            for k in kinds}


@dataclass
class Batch:
    """What every image of one run shares."""

    segmenter: object
    background: object
    recipes: dict[str, str]  # kind -> recipe digest
    record: Record
    overwrite: bool
    summary: Summary = dataclasses.field(default_factory=Summary)


def process(job: Job, paths: dict[str, Path], batch: Batch) -> None:
    """One image: skipped unchanged when the record says its outputs are up to date (decided
    from file hashes, before decoding it), else segmented and written."""
    from ..data.io import DataError

    try:
        input_digest = file_digest(job.path)
    except OSError as exc:
        raise DataError(f"{job.path}: cannot read ({exc.strerror or exc})") from None
    wanted = {out: batch.recipes[kind] for kind, out in paths.items()}
    if not batch.overwrite and batch.record.up_to_date(wanted, input_digest):
        batch.summary.unchanged += len(paths)
        batch.summary.skipped += 1
        return
    encoded = render_all(job, batch.segmenter, paths, batch.background)
    write_outputs(encoded, batch.overwrite, batch.summary)
    batch.record.add({out: (wanted[out], data) for out, data in encoded.items()}, input_digest)


def report(summary: Summary, outdir: Path, interrupted: tuple[int, int] | None = None,
           stopped: str = "interrupted") -> None:
    """The last line: counts; when ``interrupted`` = (images reached, images in all), how far it
    got (``stopped``: why it ended early) and how to finish."""
    same = f", {summary.unchanged} already up to date" if summary.unchanged else ""
    skipped = f" ({summary.skipped} not recomputed)" if summary.skipped else ""
    counts = (f"{summary.done} image(s) done, {summary.failed} failed, {summary.written} file(s) written "
              f"to {outdir}{same}{skipped}")
    if interrupted:
        counts = (f"{stopped} after {interrupted[0]} of {interrupted[1]} image(s): {counts}; "
                  "run the same command again to finish (done images are skipped, not recomputed)")
    print(counts, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from PIL import Image
    from tqdm import tqdm

    from ..data.io import DataError
    from ..inference import Segmenter, parse_background
    from ._common import sigterm_as_exit

    kinds = list(dict.fromkeys(args.output or ["mask"]))
    cfg = postprocess_config(args)
    background = parse_background(args.background, args.max_pixels) if "composite" in kinds else None
    jobs, errors = gather_jobs(args.inputs, args.outdir)
    segmenter = Segmenter(args.model, backend=args.backend, postprocess=cfg, threads=args.threads,
                          max_pixels=args.max_pixels)
    batch = Batch(segmenter, background, output_recipes(kinds, segmenter, cfg, background),
                  Record.load(args.outdir), args.overwrite, Summary(failed=len(errors)))
    summary = batch.summary
    claims = job_claims(jobs)
    bar = tqdm(jobs, desc="predict", unit="img", disable=True if args.no_progress else None)
    try:
        with sigterm_as_exit():
            for job in bar:
                paths = output_paths(job, args.outdir, kinds, args.composite_format)
                try:
                    check_job_outputs(paths, claims, job)
                    process(job, paths, batch)
                    summary.done += 1
                # DecompressionBombError: PIL's own guard, reached only with --max-pixels above it.
                except (DataError, ValueError, OSError, Image.DecompressionBombError) as exc:
                    summary.failed += 1
                    text = str(exc)
                    # DataError messages already start with the path.
                    line = text if text.startswith(str(job.path)) else f"{job.path}: {text}"
                    tqdm.write(one_line(line), file=sys.stderr)
                    if isinstance(exc, WriteError) and exc.out_of_space:
                        # Every next image would fail the same way, one line each: stop here.
                        raise OutOfSpace from exc
    except (KeyboardInterrupt, SystemExit, OutOfSpace) as exc:  # Ctrl-C, SIGTERM via sigterm_as_exit
        bar.close()
        reached = summary.done + summary.failed - len(errors)  # errors: inputs that were not found
        full = isinstance(exc, OutOfSpace)
        report(summary, args.outdir, interrupted=(reached, len(jobs)),
               stopped=STOPPED_LINE if full else "interrupted")
        if full:
            return 1
        raise
    report(summary, args.outdir)
    return 1 if summary.failed else 0
