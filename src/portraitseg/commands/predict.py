"""``portraitseg predict``: masks, cut-outs, composites and preview grids for image files."""

from __future__ import annotations

import argparse
import glob
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.datasets import IMAGE_SUFFIXES
from ..runtimes.factory import BACKENDS
from ._common import MODEL_HELP, add_postprocess_flags, postprocess_config

DEFAULT_OUTDIR = Path("portraitseg-out")
# What predict writes per image: the pipeline's renders plus a preview grid.
WRITE_KINDS = ("mask", "cutout", "composite", "grid")
GLOB_CHARS = "*?["
CHECKER_PX = 16  # checkerboard square behind the grid's cut-out panel

DESCRIPTION = """\
Segment the person in each INPUT and write, per image and per --output kind:
  mask       <stem>.mask.png       8-bit alpha matte
  cutout     <stem>.cutout.png     RGBA, the matte as alpha
  composite  <stem>.composite.jpg  person over --background (jpg, or png with --composite-format png)
  grid       <stem>.grid.jpg       input | mask | cut-out on a checkerboard, side by side

INPUT: image files, folders (searched recursively; the relative folder structure is kept
under OUTDIR) or glob patterns (quote them; ** is recursive). Inputs are never overwritten;
existing outputs are refused unless --overwrite. A bad file is reported as 'path: problem'
and skipped; the exit code is then 1.
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


def collect_inputs(specs: list[str], outdir: Path) -> tuple[list[Job], list[str]]:
    """Expand files/folders/globs into jobs; unmatched specs become error lines."""
    jobs: list[Job] = []
    errors: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            # Skip OUTDIR when it sits inside the input folder: a rerun must not segment its
            # own previous outputs.
            found = (p for p in path.rglob("*") if p.is_file() and _is_image(p))
            files = sorted(p for p in found if not _inside(p, outdir))
            jobs += [Job(p, p.parent.relative_to(path)) for p in files]
        elif path.is_file():
            jobs.append(Job(path, Path()))
        elif any(c in spec for c in GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if m.is_file() and _is_image(m)]
            if not files:
                errors.append(f"{spec}: no image files match")
            jobs += [Job(p, Path()) for p in files]
        else:
            errors.append(f"{spec}: no such file or folder")
    return jobs, errors


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
    add("--background", default="blur", metavar="PATH|COLOR|blur",
        help="composite background: image file, colour name/#hex, or blur (default: blur)")
    add("--composite-format", choices=("jpg", "png"), default="jpg",
        help="composite file type (default: jpg)")
    add("--model", default="default", help=f"{MODEL_HELP} (default: %(default)s)")
    add("--backend", choices=BACKENDS, default="auto",
        help="for --model default: LiteRT, ONNX Runtime or PyTorch (default: auto = the fastest installed: "
             "tflite, else onnx)")
    add("--threads", type=int, default=None, help="inference threads (default: backend default)")
    add("--overwrite", action="store_true", help="replace existing output files")
    add("--no-progress", action="store_true", help="no progress bar")
    add_postprocess_flags(parser)
    parser.set_defaults(func=run)
    return parser


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    written: int = 0


def _check_outputs(paths: dict[str, Path], inputs: set[Path], claimed: dict[Path, Path], job: Job,
                   overwrite: bool) -> None:
    for out in paths.values():
        resolved = out.resolve()
        if resolved in inputs:
            raise ValueError(f"output {out} is an input file; refusing to overwrite it")
        if resolved in claimed:
            raise ValueError(f"output {out} is also the output of {claimed[resolved]} (same name)")
        if out.exists() and not overwrite:
            raise ValueError(f"output {out} exists (use --overwrite)")
    for out in paths.values():
        claimed[out.resolve()] = job.path


def process(job: Job, segmenter, paths: dict[str, Path], background: object) -> int:
    from ..data.io import encode_image, write_atomic

    pred = segmenter.predict(job.path)
    for kind, out in paths.items():
        if kind == "grid":
            image = make_grid(pred.image, pred.alpha)
        else:
            image = segmenter.render(pred, kind, background)
        write_atomic(out, encode_image(image, out.suffix))
    return len(paths)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import DataError
    from ..inference import Segmenter, parse_background

    kinds = list(dict.fromkeys(args.output or ["mask"]))
    cfg = postprocess_config(args)
    background = parse_background(args.background) if "composite" in kinds else None
    jobs, errors = collect_inputs(args.inputs, args.outdir)
    for line in errors:
        print(line, file=sys.stderr)
    if not jobs:
        raise ValueError("no input images found")
    segmenter = Segmenter(args.model, backend=args.backend, postprocess=cfg, threads=args.threads)
    inputs = {j.path.resolve() for j in jobs}
    claimed: dict[Path, Path] = {}
    summary = Summary(failed=len(errors))
    bar = tqdm(jobs, desc="predict", unit="img", disable=True if args.no_progress else None)
    for job in bar:
        paths = output_paths(job, args.outdir, kinds, args.composite_format)
        try:
            _check_outputs(paths, inputs, claimed, job, args.overwrite)
            summary.written += process(job, segmenter, paths, background)
            summary.done += 1
        except (DataError, ValueError, OSError) as exc:
            summary.failed += 1
            text = str(exc)
            # DataError messages already start with the path.
            line = text if text.startswith(str(job.path)) else f"{job.path}: {text}"
            tqdm.write(line, file=sys.stderr)
    print(f"{summary.done} image(s) done, {summary.failed} failed, {summary.written} file(s) written to "
          f"{args.outdir}", file=sys.stderr)
    return 1 if summary.failed else 0
