"""Dataset readers: ``images/`` + ``masks/`` or ``alpha/`` folders with split lists, and .npy arrays.

Every reader yields :class:`Sample` objects with the image as RGB uint8 (H, W, 3), the person
target as float32 in [0, 1] (hard masks become 0/1; soft teacher alpha stays soft) and an
``ignore`` boolean map (True = excluded from loss and metrics).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..defaults import MAX_PIXELS
from .io import DataError, read_gray, read_rgb

# Every image suffix the package reads (datasets, predict inputs, export calibration photos).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def not_a_file(path: Path) -> str | None:
    """The error line for an image-named path that is neither a file nor a folder: a broken
    symbolic link or symlink loop, a FIFO, socket or device (never opened: a FIFO would block
    the reader). None for a file or a folder."""
    if path.is_file() or path.is_dir():
        return None
    if path.is_symlink():
        return f"{path}: broken symbolic link or symlink loop"
    if path.exists():
        return f"{path}: not a regular file (a FIFO, socket or device)"
    return None


def find_images(folder: str | Path) -> tuple[list[Path], list[str]]:
    """Image files under ``folder`` (recursive, sorted; links to folders are not followed) and
    one error line per image-named path that is not a file (:func:`not_a_file`) and per folder
    that cannot be read: each would otherwise vanish from the run unreported."""
    files: list[Path] = []
    errors: list[tuple[str, str]] = []

    def unreadable(exc: OSError) -> None:
        name = exc.filename or folder
        reason = exc.strerror or str(exc)
        errors.append((str(name), f"{name}: cannot read the folder ({reason}); its images are skipped"))

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        for name in names + dirs:
            p = Path(root) / name
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            problem = not_a_file(p)
            if p.is_file():
                files.append(p)
            elif problem is not None:
                errors.append((str(p), problem))
    return sorted(files), [line for _, line in sorted(errors)]


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    target: np.ndarray  # (H, W) float32 in [0, 1]
    ignore: np.ndarray  # (H, W) bool
    name: str
    soft: bool = False  # target came from soft alpha (teacher) rather than a hand mask


@dataclass
class SkipReport:
    """Files skipped under ``on_error="skip"``, reported at the end instead of crashing."""

    errors: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.errors.append(message)


def read_split(path: str | Path) -> list[str]:
    """The non-empty, stripped lines of a split list. ``utf-8-sig``: editors on Windows save
    a byte-order mark, which would otherwise become part of the first stem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: split file is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_stem(stem: str, source: Path | str) -> None:
    """Refuse a split entry that is absolute or climbs out of the dataset with ``..``: its
    image/mask paths are built by joining it to the dataset's folders."""
    path = Path(stem)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{source}: entry {stem!r} points outside the dataset (absolute or '..')")


def mask_to_target(mask: np.ndarray, soft: bool) -> np.ndarray:
    """A stored 8-bit mask/alpha/ignore map -> float32 in [0, 1], the one place masks are read.

    A map whose maximum is 1 holds 0/1 labels (common in other tools' exports; or [0, 1]
    floats in .npy arrays), taken as is: thresholded at 128 or divided by 255 it would be all
    background. Otherwise ``soft`` maps (teacher alpha) are divided by 255 and hard masks
    thresholded at 128 (0/255 files)."""
    if not mask.size or float(mask.max()) <= 1.0:
        return mask.astype(np.float32)
    if soft:
        return mask.astype(np.float32) / np.float32(255.0)
    return (mask >= 128).astype(np.float32)


def _find_image(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{folder / stem}.*: image listed in the split is missing")


class FolderDataset:
    """``root/images/<stem>.jpg`` + ``root/masks/<stem>.png`` (0/255) or ``root/alpha/<stem>.png``
    (soft 0..255), optional ``root/ignore/<stem>.png`` (255 = ignore).

    ``split`` is a split-list file (absolute, or relative to ``root``); without it every image
    in ``images/`` is used. ``on_error="skip"`` skips unreadable/mismatched pairs and records
    them in ``self.skipped``; the default raises :class:`DataError` naming the file.
    """

    def __init__(self, root: str | Path, split: str | Path | None = None, on_error: str = "raise",
                 max_pixels: int = MAX_PIXELS) -> None:
        self.root = Path(root)
        self.max_pixels = max_pixels  # larger images are bad samples, refused from their header
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset folder not found")
        if on_error not in ("raise", "skip"):
            raise ValueError("on_error must be 'raise' or 'skip'")
        self.on_error = on_error
        self.skipped = SkipReport()
        self.image_dir = self.root / "images"
        if (self.root / "masks").is_dir():
            self.target_dir, self.soft = self.root / "masks", False
        elif (self.root / "alpha").is_dir():
            self.target_dir, self.soft = self.root / "alpha", True
        else:
            raise DataError(f"{self.root}: has neither masks/ nor alpha/ folder")
        self.ignore_dir = self.root / "ignore" if (self.root / "ignore").is_dir() else None
        self.split_path: Path | None = None
        if split is not None:
            split_path = Path(split)
            if not split_path.is_absolute() and not split_path.is_file():
                split_path = self.root / split_path
            self.stems = read_split(split_path)
            self.split_path = split_path
        else:
            self.stems = sorted(
                p.stem for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, index: int) -> Sample:
        """Read one pair, validating it; raises :class:`DataError` naming the bad file."""
        stem = self.stems[index]
        check_stem(stem, self.split_path or self.root)
        image_path = _find_image(self.image_dir, stem)
        image = read_rgb(image_path, self.max_pixels)
        target_path = self.target_dir / f"{stem}.png"
        target = read_gray(target_path, self.max_pixels)
        if target.shape != image.shape[:2]:
            raise DataError(
                f"{target_path}: mask size {target.shape[1]}x{target.shape[0]} does not match "
                f"image size {image.shape[1]}x{image.shape[0]}"
            )
        target_f = mask_to_target(target, self.soft)
        ignore = np.zeros(image.shape[:2], dtype=bool)
        if self.ignore_dir is not None and (self.ignore_dir / f"{stem}.png").is_file():
            ign = read_gray(self.ignore_dir / f"{stem}.png", self.max_pixels)
            if ign.shape != image.shape[:2]:
                raise DataError(f"{self.ignore_dir / stem}.png: ignore map size does not match image")
            ignore = mask_to_target(ign, soft=False) > 0.5
        return Sample(image, target_f, ignore, stem, self.soft)

    def __getitem__(self, index: int) -> Sample:
        return self.load(index)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate over readable samples; under ``on_error="skip"`` bad ones are recorded."""
        for i in range(len(self)):
            try:
                yield self.load(i)
            except DataError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped.add(str(exc))


class NpyDataset:
    """The original project's arrays: images (N,H,W,3) uint8 and masks (N,H,W[,1]) uint8.

    Masks may be 0/1 or 0/255 (each mask's range decides, :func:`mask_to_target`); soft
    values are kept.
    """

    def __init__(self, images: str | Path, masks: str | Path) -> None:
        self.images_path, self.masks_path = Path(images), Path(masks)
        for p in (self.images_path, self.masks_path):
            if not p.is_file():
                raise DataError(f"{p}: .npy file not found")
        try:
            self.images = np.load(self.images_path, mmap_mode="r")
            self.masks = np.load(self.masks_path, mmap_mode="r")
        except ValueError as exc:
            raise DataError(f"{self.images_path}: not a readable .npy array ({exc})") from exc
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DataError(f"{self.images_path}: expected shape (N,H,W,3), got {self.images.shape}")
        masks_shape = self.masks.shape[:3] if self.masks.ndim == 4 else self.masks.shape
        if masks_shape != self.images.shape[:3]:
            raise DataError(
                f"{self.masks_path}: mask shape {self.masks.shape} does not match images {self.images.shape}"
            )
        self.name = self.images_path.stem
        self.soft = False
        self.skipped = SkipReport()

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Sample:
        mask = np.asarray(self.masks[index])
        if mask.ndim == 3:
            mask = mask[..., 0]
        image = np.ascontiguousarray(self.images[index]).astype(np.uint8)
        target = mask_to_target(mask, soft=True)
        return Sample(image, target, np.zeros(mask.shape, bool), f"{self.name}_{index:06d}")

    def __getitem__(self, index: int) -> Sample:
        return self.load(index)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self.load(i)


def open_dataset(spec: str | Path, split: str | Path | None = None, on_error: str = "raise",
                 max_pixels: int = MAX_PIXELS):
    """A folder dataset, or ``images.npy:masks.npy`` for the original project's arrays."""
    text = str(spec)
    if text.endswith(".npy") or ".npy:" in text:
        images, _, masks = text.partition(":")
        if not masks:
            raise DataError(f"{text}: give the .npy arrays as IMAGES.npy:MASKS.npy")
        return NpyDataset(images, masks)
    return FolderDataset(spec, split, on_error, max_pixels)
