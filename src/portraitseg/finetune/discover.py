"""Finding a user's labelled images: folders in our layout, or plain image + mask pairs by name.

Every DATA folder becomes one :class:`Source`, a folder in our layout (``images/`` +
``masks/`` or ``alpha/``) that :class:`~portraitseg.data.FolderDataset` and ``build_cache`` read
as they are, so fine-tuning adds no second reader:

- a folder that already has ``images/`` + ``masks/`` (0/255 or 0/1) or ``alpha/`` is used in
  place; its ``train.txt`` + ``val.txt`` are the held-out split when both exist;
- any other folder is searched (recursively) for pairs ``x.jpg`` + ``x_mask.png`` or ``x.png``,
  which are linked (symbolic links, nothing copied) into a staged folder in our layout.

Images without a mask, masks without an image and other odd files are reported (one line each,
naming the file) and left out; the command lists them at the end and exits 1.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.datasets import IMAGE_SUFFIXES
from ..data.io import DataError

MASK_SUFFIX = "_mask"  # x.jpg + x_mask.png
TARGET_DIRS = ("masks", "alpha")


@dataclass
class Source:
    """One DATA folder as a dataset in our layout."""

    name: str  # unique label (the folder's name); the cache's source name
    root: Path  # folder with images/ + masks/|alpha/ (the user's own, or the staged links)
    stems: list[str]  # every usable sample
    origin: Path  # the folder the user gave
    given_split: tuple[list[str], list[str]] | None = None  # (train, val) from train.txt + val.txt
    staged: bool = False  # root holds links to the user's pairs

    def image_paths(self) -> dict[str, Path]:
        """stem -> the user's image file (links resolved)."""
        folder = self.root / "images"
        return {p.stem: p.resolve() for p in folder.iterdir() if p.stem in set(self.stems)}


@dataclass
class Discovery:
    sources: list[Source] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "PATH: reason", one per left-out file


def is_layout(folder: Path) -> bool:
    """Our layout: ``images/`` beside ``masks/`` or ``alpha/``."""
    return (folder / "images").is_dir() and any((folder / d).is_dir() for d in TARGET_DIRS)


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _layout_source(folder: Path, name: str, problems: list[str]) -> Source:
    images = _images_in(folder / "images")
    target_dir = next(folder / d for d in TARGET_DIRS if (folder / d).is_dir())
    stems = []
    for stem, path in images.items():
        if (target_dir / f"{stem}.png").is_file():
            stems.append(stem)
        else:
            problems.append(f"{path}: no {target_dir.name}/{stem}.png for this image; left out")
    for mask in sorted(target_dir.glob("*.png")):
        if mask.stem not in images:
            problems.append(f"{mask}: no images/{mask.stem}.* for this {target_dir.name[:-1]}; left out")
    given = None
    if (folder / "train.txt").is_file() and (folder / "val.txt").is_file():
        usable = set(stems)
        given = tuple([s for s in _read_lines(folder / f) if s in usable] for f in ("train.txt", "val.txt"))
    return Source(name, folder, stems, folder, given)  # type: ignore[arg-type]


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def find_pairs(folder: Path) -> tuple[dict[str, tuple[Path, Path]], list[str]]:
    """``{stem: (image, mask)}`` for every pair under ``folder`` (recursive) and one problem line
    per file left out. A nested pair's stem holds its sub-folders (``a__b__x``), so two
    ``x.jpg`` in different folders stay two samples."""
    pairs: dict[str, tuple[Path, Path]] = {}
    problems: list[str] = []
    for parent in sorted({p.parent for p in folder.rglob("*") if p.is_file()}):
        files = [p for p in sorted(parent.iterdir()) if p.is_file() and not p.name.startswith(".")]
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            if p.suffix.lower() in IMAGE_SUFFIXES:
                by_stem.setdefault(p.stem, []).append(p)
        masks = {s.removesuffix(MASK_SUFFIX): ps[0] for s, ps in by_stem.items()
                 if s.endswith(MASK_SUFFIX) and ps[0].suffix.lower() == ".png"}
        for stem, paths in by_stem.items():
            if stem.endswith(MASK_SUFFIX) and paths[0].suffix.lower() == ".png":
                if stem.removesuffix(MASK_SUFFIX) not in by_stem:
                    problems.append(f"{paths[0]}: mask without an image {stem.removesuffix(MASK_SUFFIX)}.*; "
                                    "left out")
                continue
            image, mask = _pair_of(stem, paths, masks)
            if image is None:
                continue  # x.png is the mask of an x.jpg here
            if mask is None:
                problems.append(f"{image}: no mask {stem}{MASK_SUFFIX}.png or {stem}.png beside it; left out")
                continue
            rel = image.parent.relative_to(folder).parts
            pairs["__".join((*rel, stem))] = (image, mask)
    return pairs, problems


def _pair_of(stem: str, paths: list[Path], masks: dict[str, Path]) -> tuple[Path | None, Path | None]:
    """The image and its mask among the files named ``stem.*`` (a ``stem.png`` next to a
    ``stem.jpg`` is its mask, unless a ``stem_mask.png`` exists)."""
    if stem in masks:
        images = [p for p in paths if p.suffix.lower() != ".png"] or paths
        return images[0], masks[stem]
    non_png = [p for p in paths if p.suffix.lower() != ".png"]
    png = [p for p in paths if p.suffix.lower() == ".png"]
    if non_png and png:
        return non_png[0], png[0]
    return paths[0], None


def _stage_pairs(pairs: dict[str, tuple[Path, Path]], stage: Path) -> None:
    """Link the pairs into ``stage/images`` + ``stage/masks`` (replacing earlier links)."""
    for sub in ("images", "masks"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
        for old in (stage / sub).iterdir():
            if old.is_symlink():
                old.unlink()
    for stem, (image, mask) in pairs.items():
        os.symlink(image.resolve(), stage / "images" / f"{stem}{image.suffix.lower()}")
        os.symlink(mask.resolve(), stage / "masks" / f"{stem}.png")


def as_given(line: str, stage: Path) -> str:
    """A ``'path: problem'`` line about a pair linked under ``stage`` (``OUT/data``), told with
    the user's own file: ``photos/x_mask.png``, not ``OUT/data/photos/masks/x.png``."""
    path, sep, rest = line.partition(": ")
    link = Path(path)
    if not sep or not link.is_symlink() or not link.parent.resolve().is_relative_to(stage.resolve()):
        return line
    target = Path(os.readlink(link))
    try:
        target = target.relative_to(Path.cwd())  # as short as the user would write it
    except ValueError:
        pass
    return f"{target}: {rest}"


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    taken.add(out)
    return out


def discover(folders: list[Path], stage_dir: Path, taken: set[str] | None = None) -> Discovery:
    """Every DATA folder as a :class:`Source` (pairs are staged under ``stage_dir/<name>``).

    A missing folder, or one where nothing usable is found, is an error (DataError, one line):
    that is a wrong argument, not one bad file among many.
    """
    found = Discovery()
    taken = set() if taken is None else taken
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: data folder not found")
        name = _unique(folder.resolve().name or "data", taken)
        if is_layout(folder):
            source = _layout_source(folder, name, found.problems)
        elif (folder / "images").is_dir():
            raise DataError(f"{folder}: has images/ but neither masks/ nor alpha/")
        else:
            pairs, problems = find_pairs(folder)
            found.problems += problems
            _stage_pairs(pairs, stage_dir / name)
            source = Source(name, stage_dir / name, sorted(pairs), folder, staged=True)
        if not source.stems:
            raise DataError(f"{folder}: no labelled images found (expected images/ + masks/ or alpha/, "
                            f"or pairs x.jpg + x{MASK_SUFFIX}.png / x.png)")
        found.sources.append(source)
    return found


def held_out_order(stems: list[str], seed: int) -> list[str]:
    """``stems`` in a fixed pseudo-random order (a hash of seed and stem, so adding images later
    moves few of the earlier ones between the two parts)."""
    return sorted(stems, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())


def split_off(stems: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out): ``round(len * fraction)`` images held out, at least one of each."""
    if len(stems) < 2:
        raise DataError(f"{len(stems)} labelled image(s): need at least 2 to hold one out")
    k = min(len(stems) - 1, max(1, round(len(stems) * fraction)))
    held = set(held_out_order(stems, seed)[:k])
    return [s for s in stems if s not in held], [s for s in stems if s in held]
