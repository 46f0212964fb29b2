"""A seeded corpus of corrupt images, made at test time (nothing stored).

Six formats (PNG, JPEG, WebP, GIF, TIFF, BMP), each encoded from one small synthetic picture
and then broken in the ways real uploads and disks break files: truncated at many points,
single flipped bytes in the header, random bytes with the right magic number, pure random
bytes, zero length. Some mutations still decode (a flipped byte in a field nobody checks):
callers accept "decoded fine" or "a clean error", never a crash.

Used by the server, API and ``predict`` tests (``from fuzz_corpus import corpus``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp"}
HEADER_BYTES = 64  # where the flips go: magic, sizes, chunk lengths, IFD offsets


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. "png-trunc-017"; unique, safe as a file stem
    fmt: str
    data: bytes

    @property
    def filename(self) -> str:
        return self.name + SUFFIX[self.fmt]


def picture(width: int = 48, height: int = 40, seed: int = 0) -> np.ndarray:
    """A small RGB picture with smooth areas and edges (so every encoder has real work)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    img[height // 4: 3 * height // 4, width // 3: 2 * width // 3] = (200, 60, 40)
    noise = rng.integers(-8, 9, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def _mutations(fmt: str, good: bytes, rng: np.random.Generator, per_format: int) -> list[Sample]:
    tag = fmt.lower()
    out = [Sample(f"{tag}-empty", fmt, b"")]
    n_trunc = per_format // 3
    # Truncations: dense in the header (where parsers trip), then spread over the body.
    cuts = sorted({*range(1, min(len(good) - 1, 40), 3),
                   *(int(c) for c in rng.integers(1, len(good) - 1, n_trunc))})[:n_trunc]
    out += [Sample(f"{tag}-trunc-{i:03d}", fmt, good[:c]) for i, c in enumerate(cuts)]
    for i in range(per_format // 3):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):  # 1-3 flipped bytes in the header
            pos = int(rng.integers(0, min(HEADER_BYTES, len(data))))
            data[pos] ^= int(rng.integers(1, 256))
        out.append(Sample(f"{tag}-flip-{i:03d}", fmt, bytes(data)))
    for i in range(per_format - len(out) - 2):
        # The right magic number, then garbage: identified as fmt, fails in the decoder.
        body = rng.integers(0, 256, int(rng.integers(8, 400)), dtype=np.uint8).tobytes()
        out.append(Sample(f"{tag}-magic-{i:03d}", fmt, good[:8] + body))
    out.append(Sample(f"{tag}-random", fmt, rng.integers(0, 256, 300, dtype=np.uint8).tobytes()))
    out.append(Sample(f"{tag}-text", fmt, b"this is not an image\n" * 4))
    return out


def corpus(seed: int = 11, per_format: int = 50) -> list[Sample]:
    """``per_format`` corrupt variants of each of the six formats (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    rgb = picture(seed=seed)
    samples: list[Sample] = []
    for fmt in FORMATS:
        samples += _mutations(fmt, encode(rgb, fmt), rng, per_format)
    return samples


def good_samples(seed: int = 11) -> list[Sample]:
    """The intact encodings, one per format (controls: these must decode)."""
    rgb = picture(seed=seed)
    return [Sample(f"{fmt.lower()}-good", fmt, encode(rgb, fmt)) for fmt in FORMATS]
