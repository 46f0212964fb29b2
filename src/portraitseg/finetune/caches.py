"""The fine-tune's training caches (``build_cache``), reused on a re-run when their inputs are
unchanged, and the pick of bundled training images mixed back in ("replay").

Each cache is built from ``(root, split file)`` sources, exactly as ``portraitseg cache
--data ROOT:SPLIT`` does; a key file beside it records what went in (the split lists, every
input file's size and modification time, the cache size and quality), so a re-run rebuilds
only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.cache import CACHE_VERSION, build_cache
from ..data.datasets import IMAGE_SUFFIXES
from ..data.io import write_atomic
from .discover import TARGET_DIRS, held_out_order, is_layout

CacheSource = tuple[Path, Path]  # (dataset root, split file)


@dataclass
class CacheResult:
    path: Path
    reused: bool
    skipped: list[str]  # unreadable or mismatched pairs, one line each (left out of the cache)


def write_split(path: Path, stems: list[str]) -> Path:
    """A split list (one stem per line), written atomically."""
    return write_atomic(path, ("\n".join(stems) + "\n").encode())


def _files_of(root: Path, stems: set[str]) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file of ``stems`` under the dataset ``root``
    (links followed, so an edited original counts as a change)."""
    out = []
    for sub in ("images", *TARGET_DIRS, "ignore"):
        folder = root / sub
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.stem in stems and p.suffix.lower() in IMAGE_SUFFIXES:
                st = p.stat()
                out.append((f"{sub}/{p.name}", st.st_size, st.st_mtime_ns))
    return out


def cache_key(sources: list[CacheSource], size: int, quality: int) -> str:
    """What a cache holds, as one digest: change any input file, split or setting and it differs."""
    parts = []
    for root, split in sources:
        stems = split.read_text().split()
        parts.append([str(root.resolve()), stems, _files_of(root, set(stems))])
    text = json.dumps([CACHE_VERSION, size, quality, parts])
    return hashlib.sha256(text.encode()).hexdigest()


def cached(sources: list[CacheSource], out: Path, size: int, quality: int) -> CacheResult:
    """``out`` built from ``sources`` (bad pairs skipped and listed), or reused when its key file
    says it was built from exactly these inputs."""
    key = cache_key(sources, size, quality)
    key_file = out.with_suffix(".key.json")
    if out.is_file() and key_file.is_file():
        recorded = json.loads(key_file.read_text())
        if recorded.get("key") == key:
            return CacheResult(out, True, list(recorded.get("skipped", [])))
    key_file.unlink(missing_ok=True)  # a half-rebuilt cache must never look current
    # A stale cache (its key file says other inputs) is rebuilt in place.
    path, skipped = build_cache(sources, out, size, quality, on_error="skip", overwrite=True)
    write_atomic(key_file, json.dumps({"key": key, "skipped": skipped}, indent=1).encode())
    return CacheResult(path, False, skipped)


# ----------------------------------------------------------------------------- replay


def default_replay_roots() -> list[Path]:
    """Where the bundled training data is looked for: ``$PORTRAITSEG_SHARED/data``, then
    ``../shared/data`` from the working folder, then beside the source checkout (as the peer
    models in ``../shared/anchors`` are found)."""
    from ..locate import source_roots

    rel = Path("..") / "shared" / "data"
    env = os.environ.get("PORTRAITSEG_SHARED")
    roots = [Path(env) / "data"] if env else []
    return list(dict.fromkeys([*roots, rel, *(root / rel for root in source_roots())]))


def replay_datasets(root: Path, names: list[str]) -> list[tuple[Path, list[str]]]:
    """``(dataset root, its training stems)`` to mix in from ``root``: ``root`` itself when it
    is one dataset in our layout, else its folders named in ``names``."""
    if is_layout(root):
        return [(root, _stems(root))]
    found = [(root / n, _stems(root / n)) for n in names if is_layout(root / n)]
    return [(r, s) for r, s in found if s]


def _stems(root: Path) -> list[str]:
    split = root / "train.txt"
    if split.is_file():
        return split.read_text().split()
    return sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def pick_replay(datasets: list[tuple[Path, list[str]]], count: int, seed: int,
                exclude: set[Path]) -> list[tuple[Path, list[str]]]:
    """``count`` stems spread evenly over ``datasets`` (a fixed pseudo-random pick per set),
    leaving out any image in ``exclude`` (the user's own files: a held-out photo must never be
    trained on through the replay door)."""
    picked: list[tuple[Path, list[str]]] = []
    left = count
    for i, (root, stems) in enumerate(datasets):
        share = left // (len(datasets) - i)
        images = {p.stem: p.resolve() for p in (root / "images").iterdir()}
        usable = [s for s in held_out_order(stems, seed) if s in images and images[s] not in exclude]
        take = usable[:share]
        left -= len(take)
        if take:
            picked.append((root, sorted(take)))
    return picked


def replay_count(n_user: int, share: float, most: int) -> int:
    """Bundled images to mix in so that they are ``share`` of the training set (sampled
    uniformly, the epoch's composition is then the share itself)."""
    if share <= 0:
        return 0
    return min(most, max(1, round(n_user * share / (1 - share))))
