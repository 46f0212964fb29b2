"""The stages of a bulk job as plain functions over Ray Data numpy batches (``dict`` of column
-> array): check (file jobs: is the image done already?), decode, segment
(:class:`SegmentActor`, one model per actor), encode and write.

They import no Ray: Ray Data only schedules them. Every stage passes rows through and turns
a problem with one image into that row's ``error`` text (``'path: problem'``, the line
``predict`` prints), so one bad file never stops the job; later stages leave errored and
``skipped`` rows alone. Each step reuses the one implementation ``predict`` runs: its record
(``Record.up_to_date``/``add``), :func:`~portraitseg.inference.load_image`,
:class:`~portraitseg.inference.Segmenter`, ``make_grid``, :func:`~portraitseg.data.io.encode_image`
and ``write_outputs`` (same-content outputs kept, others refused without ``overwrite``, atomic).
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

from .settings import BulkSettings

Batch = dict[str, np.ndarray]

# Placeholders for an errored row's images (Ray Data needs one value per row and column; an
# empty array of the column's rank keeps the column one tensor type).
EMPTY_SHAPES = {"image": (0, 0, 3), "mask": (0, 0), "cutout": (0, 0, 4), "composite": (0, 0, 3),
                "grid": (0, 0, 3)}


def objects(items: list[Any]) -> np.ndarray:
    """A 1-D object array holding ``items`` as they are (``np.array`` would stack same-shaped
    images into one array, or fail on ragged ones)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def empty(column: str) -> np.ndarray:
    return np.zeros(EMPTY_SHAPES[column], np.uint8)


def error_line(name: str, exc: BaseException, read_as: str | None = None) -> str:
    """``'name: problem'``, as predict prints it (DataError messages already start with the
    path; one about ``read_as``, the absolute path a worker read, is put back under ``name``)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if read_as and text.startswith(read_as):
        text = name + text[len(read_as):]
    return text if text.startswith(name) else f"{name}: {text}"


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """What counts as a bad image rather than a bug: predict's list (DecompressionBombError is
    PIL's own guard, reached only with --max-pixels above it)."""
    from PIL import Image

    from ..data.io import DataError

    return (DataError, ValueError, OSError, Image.DecompressionBombError)


def _names(batch: Batch) -> list[str]:
    n = len(next(iter(batch.values())))
    return [str(p) for p in batch["path"]] if "path" in batch else ["image"] * n


def _errors(batch: Batch, n: int) -> list[str]:
    return [str(e) for e in batch["error"]] if "error" in batch else [""] * n


def _idle(batch: Batch, n: int) -> list[bool]:
    """Rows a stage leaves alone: failed earlier, or skipped as done by an earlier run."""
    skipped = [bool(x) for x in batch["skipped"]] if "skipped" in batch else [False] * n
    return [bool(e) or s for e, s in zip(_errors(batch, n), skipped)]


# --------------------------------------------------------------------------- check


def check_batch(batch: Batch, outdir: str, recipes: dict[str, str]) -> Batch:
    """File jobs: hash each input (``input_digest``, recorded with its outputs later) and mark
    it ``skipped`` when predict's record says its outputs are up to date (``recipes``: kind ->
    digest, from ``predict.output_recipes``; rows carry their record entries)."""
    from ..commands.predict_record import file_digest
    from .plan import row_record

    names = _names(batch)
    errors = _errors(batch, len(names))
    digests, skipped = [], []
    for i, name in enumerate(names):
        digest, done = "", False
        try:
            digest = file_digest(Path(str(batch["src"][i])))
        except OSError as exc:  # predict's wording
            errors[i] = f"{name}: cannot read ({exc.strerror or exc})"
        if digest and batch["record"][i]:
            wanted = {Path(str(batch[output_column(k)][i])): r for k, r in recipes.items()}
            done = row_record(outdir, str(batch["record"][i])).up_to_date(wanted, digest)
        digests.append(digest)
        skipped.append(done)
    out = dict(batch)
    out["error"] = np.array(errors, dtype=object)
    out["input_digest"], out["skipped"] = np.array(digests, dtype=object), np.array(skipped, bool)
    return out


# --------------------------------------------------------------------------- decode


def decode_bytes(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Encoded image bytes (e.g. read from object storage) -> RGB uint8, through the same
    conversion as files (:func:`~portraitseg.inference.load_image` on the PIL image: EXIF
    orientation, modes), with the same header check against ``max_pixels``."""
    from PIL import Image

    from ..data.io import DataError, check_pixels
    from ..inference import load_image

    check_pixels(data, max_pixels, what=name)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now, so a truncated file fails here
            return load_image(img)
    except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error, EOFError... on bad bytes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name}: not a readable image ({reason})") from None


def decode_batch(batch: Batch, max_pixels: int) -> Batch:
    """Files (``src``: the absolute path, read where the task runs; ``path``: the name the user
    gave, for messages) or ``bytes`` (+ optional ``path``) -> ``image`` (an ``image`` column is
    kept as it is); a row that cannot be decoded gets its ``error``."""
    from ..inference import load_image

    names = _names(batch)
    errors, idle = _errors(batch, len(names)), _idle(batch, len(names))
    if "image" in batch:  # decoded already (e.g. ray.data.read_images): the actor converts arrays
        return {**batch, "error": np.array(errors, dtype=object)}
    data = batch.get("bytes")
    sources = [str(s) for s in batch["src"]] if "src" in batch else names
    images = []
    for i, name in enumerate(names):
        image = empty("image")
        if not idle[i]:
            try:
                if data is None:
                    image = load_image(sources[i], max_pixels)
                else:
                    image = decode_bytes(data[i], name, max_pixels)
            except bad_input_errors() as exc:
                errors[i] = error_line(name, exc, read_as=sources[i])
        images.append(image)
    out = {k: v for k, v in batch.items() if k != "bytes"}
    out["image"], out["error"] = objects(images), np.array(errors, dtype=object)
    return out


# --------------------------------------------------------------------------- segment


class SegmentActor:
    """A Ray Data actor: opens the model once (a :class:`~portraitseg.inference.Segmenter`, the
    one pipeline of the package), then turns each batch's ``image`` column into one column per
    output kind (uint8 arrays: what predict encodes) and ``worker`` (host:pid, for tracing)."""

    def __init__(self, settings: BulkSettings, kinds: tuple[str, ...], threads: int) -> None:
        from ..inference import Segmenter

        self.segmenter = Segmenter(settings.model, backend=settings.backend, postprocess=settings.postprocess,
                                   threads=threads, max_pixels=settings.max_pixels)
        self.kinds, self.background = kinds, settings.background
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def render(self, image: np.ndarray) -> dict[str, np.ndarray]:
        from ..commands.predict import make_grid

        pred = self.segmenter.predict(image)
        # The grid is predict's preview; the other kinds are the pipeline's renders.
        return {k: make_grid(pred.image, pred.alpha) if k == "grid"
                else self.segmenter.render(pred, k, self.background) for k in self.kinds}

    def __call__(self, batch: Batch) -> Batch:
        names = _names(batch)
        errors, idle = _errors(batch, len(names)), _idle(batch, len(names))
        columns: dict[str, list[np.ndarray]] = {k: [] for k in self.kinds}
        for i, image in enumerate(batch["image"]):
            rendered = {}
            if not idle[i]:
                try:
                    rendered = self.render(image)
                except bad_input_errors() as exc:  # e.g. an array of the wrong shape or range
                    errors[i] = error_line(names[i], exc)
            for k in self.kinds:
                columns[k].append(rendered.get(k, empty(k)))
        out = {k: v for k, v in batch.items() if k != "image"}
        out.update({k: objects(v) for k, v in columns.items()})
        out["error"] = np.array(errors, dtype=object)
        out["worker"] = np.array([self.worker] * len(names), dtype=object)
        return out


# --------------------------------------------------------------------------- encode, write


def encode_batch(batch: Batch, suffixes: dict[str, str]) -> Batch:
    """Each kind's arrays -> file bytes (``suffixes``: kind -> ``.png``/``.jpg``, as predict
    names them); errored rows get empty bytes. An image the format cannot hold (a JPEG side over
    65500 px) is that row's error: raised here, it would abort the whole Ray job."""
    from ..data.io import encode_image

    names = _names(batch)
    errors, idle = _errors(batch, len(names)), _idle(batch, len(names))
    encoded: dict[str, list[bytes]] = {kind: [] for kind in suffixes}
    for i in range(len(names)):
        row = {}
        if not idle[i]:
            try:
                row = {kind: encode_image(batch[kind][i], suffix, what=kind)
                       for kind, suffix in suffixes.items()}
            except bad_input_errors() as exc:
                errors[i] = error_line(names[i], exc)
        for kind in suffixes:
            encoded[kind].append(row.get(kind, b""))
    out = dict(batch)
    out.update({kind: objects(v) for kind, v in encoded.items()})
    out["error"] = np.array(errors, dtype=object)
    return out


def output_column(kind: str) -> str:
    """The column holding a row's output path for ``kind`` (file jobs)."""
    return f"out_{kind}"


def write_batch(batch: Batch, outdir: str, recipes: dict[str, str], overwrite: bool) -> Batch:
    """Write each row's encoded outputs with predict's rules and add them to predict's record
    (one append per image); -> one status row per image: ``idx``, ``error``, ``skipped``,
    ``written``/``unchanged`` file counts (predict's), ``full`` (the output disk is full or
    read-only: the job stops) and the segmenting ``worker``."""
    from ..commands.predict import Summary, write_outputs
    from ..commands.predict_record import Record
    from ..outfiles import WriteError

    names = _names(batch)
    errors, idle = _errors(batch, len(names)), _idle(batch, len(names))
    skipped = [bool(x) for x in batch["skipped"]]
    record = Record(Path(outdir))  # appends only: every row's lines go to the one file
    written, unchanged, full = [], [], []
    for i, name in enumerate(names):
        counts = Summary()
        full.append(False)
        if skipped[i]:
            counts.unchanged = len(recipes)  # as predict counts a skipped image
        elif not idle[i]:
            outs = {k: Path(str(batch[output_column(k)][i])) for k in recipes}
            encoded = {outs[k]: bytes(batch[k][i]) for k in recipes}
            try:
                write_outputs(encoded, overwrite, counts)
                record.add({outs[k]: (recipes[k], encoded[outs[k]]) for k in recipes},
                           str(batch["input_digest"][i]))
            except (ValueError, OSError) as exc:  # different content without --overwrite, disk full...
                errors[i] = error_line(name, exc)
                full[-1] = isinstance(exc, WriteError) and exc.out_of_space  # the driver stops the job
        written.append(counts.written)
        unchanged.append(counts.unchanged)
    return {"idx": batch["idx"], "error": np.array(errors, dtype=object), "skipped": np.array(skipped, bool),
            "written": np.array(written, np.int64), "unchanged": np.array(unchanged, np.int64),
            "full": np.array(full, bool), "worker": batch["worker"]}
