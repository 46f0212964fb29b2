"""Training cache: every sample decoded once, resized to a fixed square and stored compactly.

Training reads the whole cache into memory (on the GPU when training there) so the loop is
compute-bound, never decode-bound. The file is a plain ``.npz`` (no pickles) holding encoded
bytes (WebP images, lossless WebP targets) plus offsets, so a 6k-image set at 224 px fits in
a few tens of MB and can be copied to a training machine.

Images are *stretched* to the square, exactly as evaluation and inference stretch the whole
image to the model input.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..defaults import INPUT_SIZE, MAX_PIXELS
from ..outfiles import check_outputs, write_results
from ..postprocess import to_u8
from .datasets import FolderDataset, Sample, find_images, open_dataset
from .io import ENCODER_MAX_SIDE, DataError, NoSamplesError, read_rgb

CACHE_VERSION = 1
# Arrays every cache has (labelled ones add target_/ignore_ bytes and offsets).
CACHE_KEYS = ("version", "size", "image_bytes", "image_offsets", "source", "source_names", "names")


@dataclass
class CacheArrays:
    """Decoded cache: ``images`` (N,S,S,3) uint8 RGB, ``targets`` (N,S,S) uint8 0..255,
    ``ignore`` (N,S,S) uint8 0/1, ``source`` (N,) index into ``source_names``."""

    images: np.ndarray
    targets: np.ndarray | None
    ignore: np.ndarray | None
    source: np.ndarray
    source_names: list[str]
    names: list[str]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def _encode(img: np.ndarray, lossless: bool, quality: int) -> bytes:
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    q = 101 if lossless else quality  # WebP quality > 100 selects lossless mode
    ok, buf = cv2.imencode(".webp", arr, [cv2.IMWRITE_WEBP_QUALITY, q])
    if not ok:
        raise DataError("WebP encoding failed")
    return buf.tobytes()


def _pack(chunks: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).copy(), offsets


def check_build_options(out: str | Path, size: int, quality: int, overwrite: bool = False,
                        inputs: Sequence[Path] = ()) -> None:
    """Refuse a side or quality no cache can have (OpenCV would fail deep inside its resize with
    an assertion) and an output that cannot be written, exists (unless ``overwrite``) or is one
    of the ``inputs`` (a split file), before anything is decoded."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"--size must be a whole number >= 1; got {size}")
    # The images are stored as WebP: a larger side fails only after every sample was resized to
    # it (--size 100000 asked OpenCV for 30 GB per image and ended in a traceback).
    if size > ENCODER_MAX_SIDE[".webp"]:
        most = ENCODER_MAX_SIDE[".webp"]
        raise ValueError(f"--size must be at most {most} (the cache stores WebP images); got {size}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise ValueError(f"--quality must be a whole number in [0, 100]; got {quality}")
    check_outputs({"cache": out}, [("--data", p) for p in inputs], overwrite, make_folders=True)


def _input_files(dataset: object) -> list[Path]:
    """The files of a dataset that name its samples (split file, .npy arrays): never an output."""
    named = [getattr(dataset, a, None) for a in ("split_path", "images_path", "masks_path")]
    return [p for p in named if p is not None]


def _resize_sample(sample: Sample, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = cv2.resize(sample.image, (size, size), interpolation=cv2.INTER_AREA)
    target = cv2.resize(sample.target, (size, size), interpolation=cv2.INTER_AREA)
    ignore = cv2.resize(sample.ignore.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return image, to_u8(target), ignore


def build_cache(
    sources: Iterable[tuple[str | Path, str | Path | None]],
    out: str | Path,
    size: int = INPUT_SIZE,
    quality: int = 85,
    on_error: str = "raise",
    max_pixels: int = MAX_PIXELS,
    overwrite: bool = False,
) -> tuple[Path, list[str]]:
    """Encode labelled datasets (``(root, split)`` pairs) into one cache file; an existing
    ``out`` is refused unless ``overwrite``.

    Returns the path and the list of skipped-file messages (``on_error="skip"``).
    """
    datasets = [open_dataset(root, split, on_error=on_error, max_pixels=max_pixels)
                for root, split in sources]  # split files read, nothing decoded yet
    check_build_options(out, size, quality, overwrite, [p for ds in datasets for p in _input_files(ds)])
    images: list[bytes] = []
    targets: list[bytes] = []
    ignores: list[bytes] = []
    source: list[int] = []
    names: list[str] = []
    source_names: list[str] = []
    skipped: list[str] = []
    for dataset in datasets:
        source_names.append(dataset.name)
        for sample in tqdm(dataset, total=len(dataset), desc=f"cache {dataset.name}", unit="img"):
            image, target, ignore = _resize_sample(sample, size)
            images.append(_encode(image, False, quality))
            targets.append(_encode(target, True, quality))
            ignores.append(_encode(ignore * 255, True, quality))
            source.append(len(source_names) - 1)
            names.append(sample.name)
        skipped += dataset.skipped.errors
    if not images:
        raise NoSamplesError(f"{out}: no readable samples to cache", skipped)
    arrays = _arrays(images, names, source, source_names, size)
    arrays["target_bytes"], arrays["target_offsets"] = _pack(targets)
    arrays["ignore_bytes"], arrays["ignore_offsets"] = _pack(ignores)
    return _save(out, arrays, overwrite), skipped


def build_image_cache(
    folders: str | Path | Sequence[str | Path],
    out: str | Path,
    size: int = INPUT_SIZE,
    quality: int = 85,
    skipped: list[str] | None = None,
    max_pixels: int = MAX_PIXELS,
    overwrite: bool = False,
) -> Path:
    """Cache unlabelled image folders (backgrounds for synthetic compositing); an existing
    ``out`` is refused unless ``overwrite``.

    Each folder becomes one source (named after the folder), so training can weight them. A bad
    image raises :class:`DataError`, or with a ``skipped`` list is recorded there and left out.
    """
    check_build_options(out, size, quality, overwrite)
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    images: list[bytes] = []
    names: list[str] = []
    source: list[int] = []
    for i, folder in enumerate(folders):
        files, bad_links = find_images(folder)
        if not files:
            raise DataError(f"{folder}: no images found")
        if bad_links and skipped is None:
            raise DataError(bad_links[0])
        if skipped is not None:
            skipped += bad_links
        for p in tqdm(files, desc=f"cache {folder.name}", unit="img"):
            try:
                img = cv2.resize(read_rgb(p, max_pixels), (size, size), interpolation=cv2.INTER_AREA)
            except DataError as exc:
                if skipped is None:
                    raise
                skipped.append(str(exc))
                continue
            images.append(_encode(img, False, quality))
            names.append(p.stem)
            source.append(i)
    if not images:
        raise NoSamplesError(f"{out}: no readable images to cache", skipped or [])
    return _save(out, _arrays(images, names, source, [f.name for f in folders], size), overwrite)


def _arrays(
    images: list[bytes], names: list[str], source: list[int], source_names: list[str], size: int
) -> dict:
    image_bytes, image_offsets = _pack(images)
    return {
        "version": np.array(CACHE_VERSION),
        "size": np.array(size),
        "image_bytes": image_bytes,
        "image_offsets": image_offsets,
        "source": np.asarray(source, dtype=np.int16),
        "source_names": np.asarray(source_names),
        "names": np.asarray(names),
    }


def _save(out: str | Path, arrays: dict, overwrite: bool) -> Path:
    """The .npz written atomically through ``outfiles.write_results`` (a full disk or read-only
    folder is one line naming the file, and leaves no temporary behind; a file that appeared
    while decoding is not replaced unless ``overwrite``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_results({Path(out): buffer.getbuffer().tobytes()}, overwrite)
    return Path(out)


def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path}: damaged cache ({what}); rebuild it with `portraitseg cache`")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a cache file, read now (a damaged member fails here, with its name)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: z[key] for key in z.files}
    except Exception as exc:  # BadZipFile (truncated, bad CRC), a pickled array, not an .npz at all
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a portraitseg cache, or a damaged one ({reason}); rebuild it with "
                        "`portraitseg cache`") from None
    missing = [k for k in CACHE_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: not a portraitseg cache (missing {', '.join(missing)})")
    version = int(arrays["version"]) if arrays["version"].size == 1 else -1
    if version != CACHE_VERSION:
        raise DataError(f"{path}: cache version {version}, expected {CACHE_VERSION}; rebuild it")
    n = len(arrays["image_offsets"]) - 1
    for kind in ("image", "target", "ignore"):
        if f"{kind}_bytes" in arrays or kind == "image":
            data, offsets = arrays.get(f"{kind}_bytes"), arrays.get(f"{kind}_offsets")
            if data is None or offsets is None or len(offsets) != n + 1 or (offsets.size and (
                offsets[0] != 0 or offsets[-1] != len(data) or (np.diff(offsets) <= 0).any()
            )):
                raise _damaged(path, f"{kind} offsets do not fit the stored bytes")
    source, names = arrays["source"], arrays["names"]
    if n < 1 or len(source) != n or len(names) != n:
        raise _damaged(path, f"{n} images but {len(source)} source ids and {len(names)} names")
    if source.min() < 0 or source.max() >= len(arrays["source_names"]) or arrays["size"].size != 1:
        raise _damaged(path, "source ids or size out of range")
    return arrays


def _decode_all(
    data: np.ndarray, offsets: np.ndarray, flags: int, workers: int, desc: str, progress: bool, size: int,
    path: Path, names: np.ndarray,
) -> np.ndarray:
    channels = (size, size, 3) if flags == cv2.IMREAD_COLOR else (size, size)

    def one(i: int) -> np.ndarray:
        img = cv2.imdecode(data[offsets[i] : offsets[i + 1]], flags)
        if img is None or img.shape != channels:
            raise _damaged(path, f"{desc} of sample {i} ({names[i]}) cannot be decoded to {size}x{size}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img

    n = len(offsets) - 1
    with ThreadPoolExecutor(max(1, workers)) as pool:
        bar = tqdm(pool.map(one, range(n)), total=n, desc=f"{path.name} {desc}", unit="img", leave=False,
                   disable=not progress)
        return np.stack(list(bar))


def load_cache(path: str | Path, workers: int = 4, progress: bool = True) -> CacheArrays:
    """Decode a cache file into memory (OpenCV releases the GIL, so threads scale); a damaged
    file is one :class:`DataError` line naming it. ``progress``: the decoding bars."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: cache file not found")
    z = _read_arrays(path)
    size = int(z["size"])
    decode = dict(workers=workers, progress=progress, size=size, path=path, names=z["names"])
    images = _decode_all(z["image_bytes"], z["image_offsets"], cv2.IMREAD_COLOR, desc="images", **decode)
    targets = ignore = None
    if "target_bytes" in z:
        targets = _decode_all(z["target_bytes"], z["target_offsets"], cv2.IMREAD_GRAYSCALE, desc="targets",
                              **decode)
        ignore = _decode_all(z["ignore_bytes"], z["ignore_offsets"], cv2.IMREAD_GRAYSCALE, desc="ignore",
                             **decode) > 127
        ignore = ignore.astype(np.uint8)
    return CacheArrays(
        images=images,
        targets=targets,
        ignore=ignore,
        source=z["source"].astype(np.int64),
        source_names=[str(s) for s in z["source_names"]],
        names=[str(s) for s in z["names"]],
    )


def concat_caches(caches: Sequence[CacheArrays]) -> CacheArrays:
    """Join caches of the same size into one (source ids are re-numbered)."""
    if len(caches) == 1:
        return caches[0]
    sizes = {c.size for c in caches}
    if len(sizes) != 1:
        raise DataError(f"caches have different sizes {sorted(sizes)}; rebuild them at one size")
    offset = 0
    sources = []
    names: list[str] = []
    source_names: list[str] = []
    for c in caches:
        sources.append(c.source + offset)
        offset += len(c.source_names)
        source_names += c.source_names
        names += c.names
    labelled = all(c.targets is not None for c in caches)
    return CacheArrays(
        images=np.concatenate([c.images for c in caches]),
        targets=np.concatenate([c.targets for c in caches]) if labelled else None,
        ignore=np.concatenate([c.ignore for c in caches]) if labelled else None,
        source=np.concatenate(sources),
        source_names=source_names,
        names=names,
    )


__all__ = ["CacheArrays", "FolderDataset", "build_cache", "build_image_cache", "concat_caches", "load_cache"]
