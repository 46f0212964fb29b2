"""Offline synthetic backgrounds (the original project's "random backgrounds").

Each labelled sample's person is composited onto ``K`` random background images with its
(soft) mask as the alpha matte, and written as a new ``images/`` + ``alpha/`` dataset that
``FolderDataset``/``portraitseg cache`` read like any other. The compositing maths is
:func:`portraitseg.data.augment.composite_batch` (the same as on-the-fly training augmentation).

``manifest.csv`` records where every output came from (source sample, background file and the
crop taken from it), so a composite can be traced and re-created.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .data.augment import composite_batch, person_boxes
from .data.datasets import Sample, find_images, open_dataset
from .data.io import DataError, NoSamplesError, encode_image, read_rgb
from .defaults import MAX_PIXELS
from .outfiles import check_outputs, write_files
from .postprocess import to_u8

MANIFEST_COLUMNS = ["name", "source", "stem", "background", "bg_width", "bg_height", "x0", "y0", "crop"]


@dataclass
class PrepareReport:
    written: list[str] = field(default_factory=list)  # output stems, in train.txt order
    skipped: list[str] = field(default_factory=list)  # one message per bad file
    bad_backgrounds: set[Path] = field(default_factory=set)  # reported once, then not picked again


def list_backgrounds(folder: str | Path, report: PrepareReport | None = None) -> list[Path]:
    """Background images under ``folder``; broken symlinks/loops go to ``report.skipped``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: background folder not found")
    files, bad_links = find_images(folder)
    if report is not None:
        report.skipped += bad_links
    if not files:
        raise DataError(f"{folder}: no background images found")
    return files


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def check_output_folder(out: Path, inputs: Sequence[Path]) -> None:
    """prepare writes a new dataset: refuse an input (or a folder holding one) and any folder
    with files in it, so an existing dataset's train.txt/alpha/ are never rewritten."""
    for src in inputs:
        if _overlaps(out, src):
            raise DataError(f"{out}: output folder is (or contains, or lies inside) the input {src}; "
                            "give a new folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: output folder exists and is not empty; prepare writes a new dataset, "
                        "give a new or empty folder")
    # Fail before compositing (the folder is new or empty, so nothing exists to replace).
    check_outputs({"output folder": out / "train.txt"}, make_folders=True)


def cover_resize(bg: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale ``bg`` (keeping its aspect) so it covers ``height`` x ``width``."""
    scale = max(height / bg.shape[0], width / bg.shape[1])
    size = (max(width, round(bg.shape[1] * scale)), max(height, round(bg.shape[0] * scale)))
    # Area averaging when shrinking avoids aliasing; bilinear when enlarging small textures.
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(bg, size, interpolation=interp)


def composite_one(image: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """uint8 RGB person image + float alpha in [0,1] + same-size uint8 RGB background -> uint8."""

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255

    a = torch.from_numpy(alpha.astype(np.float32))[None, None]
    zeros = torch.zeros_like(a)
    out, _, _ = composite_batch(chw(image), a, zeros, chw(bg), zeros, zeros, torch.ones(1, dtype=torch.bool))
    return to_u8(out[0].permute(1, 2, 0).numpy())


def portrait_crop(alpha: np.ndarray, rng: np.random.Generator) -> tuple[int, int, int, int] | None:
    """A head-and-shoulders box (x0, y0, x1, y1) cut from a tall person, or None.

    Mirrors the on-the-fly portrait crops: a square whose side is 25-40% of the person's
    height, centred on the person and starting a little above the head.
    """
    h, w = alpha.shape
    box = person_boxes(torch.from_numpy(alpha.astype(np.float32))[None, None])[0].numpy()
    x0, y0, x1, y1 = (box + 1) / 2 * np.array([w - 1, h - 1, w - 1, h - 1])
    person_h = y1 - y0
    if person_h < 0.3 * h:  # small people give no usable head-and-shoulders framing
        return None
    side = int(min(h, w, max(32, person_h * rng.uniform(0.25, 0.4))))
    cx = (x0 + x1) / 2
    top = y0 - side * rng.uniform(0.0, 0.15)
    left = int(np.clip(cx - side / 2, 0, w - side))
    top = int(np.clip(top, 0, h - side))
    return left, top, left + side, top + side


def _write_sample(out: Path, name: str, image: np.ndarray, alpha: np.ndarray, ignore: np.ndarray) -> None:
    """Atomic writes; a full disk is one line naming the file (outfiles.write_files)."""
    files = {out / "images" / f"{name}.jpg": encode_image(image, ".jpg", 95),
             out / "alpha" / f"{name}.png": encode_image(_to_u8(alpha), ".png")}
    if ignore.any():  # ignore maps are optional per file: only write those that say something
        files[out / "ignore" / f"{name}.png"] = encode_image(ignore.astype(np.uint8) * 255, ".png")
    write_files(files)


def _to_u8(alpha: np.ndarray) -> np.ndarray:
    return to_u8(alpha)


def _composites(
    sample: Sample,
    source: str,
    backgrounds: Sequence[Path],
    per_image: int,
    rng: np.random.Generator,
    portrait_crops: bool,
    out: Path,
    report: PrepareReport,
    max_pixels: int = MAX_PIXELS,
) -> list[list[str]]:
    """Write ``per_image`` composites of one sample; returns their manifest rows."""
    rows: list[list[str]] = []
    h, w = sample.target.shape
    picks = rng.choice(len(backgrounds), size=per_image, replace=len(backgrounds) < per_image)
    for k, bg_index in enumerate(picks):
        bg_path = backgrounds[int(bg_index)]
        if bg_path in report.bad_backgrounds:
            continue  # already reported; the draws stay as they were, so seeds reproduce
        try:
            bg = cover_resize(read_rgb(bg_path, max_pixels), h, w)
        except DataError as exc:
            report.bad_backgrounds.add(bg_path)
            report.skipped.append(str(exc))
            continue
        y0 = int(rng.integers(0, bg.shape[0] - h + 1))
        x0 = int(rng.integers(0, bg.shape[1] - w + 1))
        image = composite_one(sample.image, sample.target, bg[y0 : y0 + h, x0 : x0 + w])
        name = f"{source}_{sample.name}_bg{k}"
        _write_sample(out, name, image, sample.target, sample.ignore)
        base = [source, sample.name, str(bg_path), str(bg.shape[1]), str(bg.shape[0]), str(x0), str(y0)]
        rows.append([name, *base, ""])
        report.written.append(name)
        crop = portrait_crop(sample.target, rng) if portrait_crops else None
        if crop is not None:
            cx0, cy0, cx1, cy1 = crop
            cut = (slice(cy0, cy1), slice(cx0, cx1))
            _write_sample(out, f"{name}_crop", image[cut], sample.target[cut], sample.ignore[cut])
            rows.append([f"{name}_crop", *base, f"{cx0} {cy0} {cx1} {cy1}"])
            report.written.append(f"{name}_crop")
    return rows


def prepare(
    sources: Iterable[tuple[str | Path, str | Path | None]],
    backgrounds: str | Path,
    out: str | Path,
    per_image: int = 2,
    seed: int = 0,
    portrait_crops: bool = False,
    progress: bool = True,
    max_pixels: int = MAX_PIXELS,
) -> PrepareReport:
    """Composite every readable sample of ``sources`` onto ``per_image`` random backgrounds.

    Bad dataset or background files are skipped and listed in the report (never fatal), so a
    long run is not lost to one corrupt file.
    """
    if per_image < 1:
        raise ValueError("per_image must be at least 1")
    out = Path(out)
    sources = [(Path(root), split) for root, split in sources]
    check_output_folder(out, [root for root, _ in sources] + [Path(backgrounds)])
    report = PrepareReport()
    bg_files = list_backgrounds(backgrounds, report)
    rng = np.random.default_rng(seed)
    manifest: list[list[str]] = []
    for root, split in sources:
        dataset = open_dataset(root, split, on_error="skip", max_pixels=max_pixels)
        bar = tqdm(
            dataset, total=len(dataset), desc=f"prepare {dataset.name}", unit="img", disable=not progress
        )
        for sample in bar:
            manifest += _composites(
                sample, dataset.name, bg_files, per_image, rng, portrait_crops, out, report, max_pixels
            )
        report.skipped += dataset.skipped.errors
    if not report.written:
        raise NoSamplesError(f"{out}: no readable samples to composite", report.skipped)
    text = io.StringIO()
    csv.writer(text).writerows([MANIFEST_COLUMNS, *manifest])
    write_files({out / "train.txt": ("\n".join(report.written) + "\n").encode(),
                 out / "manifest.csv": text.getvalue().encode()})
    return report


__all__ = ["PrepareReport", "composite_one", "cover_resize", "list_backgrounds", "portrait_crop", "prepare"]
