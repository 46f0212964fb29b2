"""A limit on JPEG scans: a progressive JPEG's decode work grows with its number of scans, not
with its size in bytes or pixels.

Why: libjpeg visits every 8x8 block of a component in every scan, even a scan that codes
nothing (one end-of-band run covers 16,384 blocks in two bytes). 5,000 such scans of a
4096x4096 image are a 230 KB file that takes about a minute of CPU to decode, far inside any
byte or pixel limit, and a decode cannot be interrupted. Encoders write 1 scan (baseline), up
to 4 (non-interleaved baseline), about 10 (libjpeg's progressive script) or 10-20 (mozjpeg),
so a limit of 100 never refuses a real photo and bounds a 25 MP decode to a few seconds.

The check reads only bytes (no decoder): the server calls it on uploads, and the file readers
can call it on a path.
"""

from __future__ import annotations

from pathlib import Path

MAX_JPEG_SCANS = 100
SOI = b"\xff\xd8"
SOS = b"\xff\xda"  # start-of-scan marker
_CHUNK = 1 << 20


class ScanLimitError(ValueError):
    """A JPEG with more scans than the limit (``scans`` counted, ``limit``)."""

    def __init__(self, scans: int, limit: int) -> None:
        super().__init__(f"progressive JPEG with {scans} scans; the limit is {limit} "
                         "(each scan is a decoding pass over the whole image)")
        self.scans = scans
        self.limit = limit


def jpeg_scan_count(source: bytes | str | Path) -> int:
    """An upper bound on the number of scans of the JPEG ``source`` (bytes or a file); 0 when
    it is not a JPEG.

    Counts start-of-scan markers (FF DA) anywhere in the data. Inside entropy-coded data an
    FF byte is always followed by 00 or a restart marker, so every real scan is counted and a
    bomb cannot hide one; FF DA inside metadata (an EXIF thumbnail's own scans) is counted
    too, which can only over-count by a few. One C-level pass (``bytes.count``), no parsing.
    """
    if isinstance(source, (bytes, bytearray)):
        return source.count(SOS) if source[:2] == SOI else 0
    with open(source, "rb") as f:
        if f.read(2) != SOI:
            return 0
        count, tail = 0, b""
        while chunk := f.read(_CHUNK):
            data = tail + chunk  # a marker split across two reads is counted once, here
            count += data.count(SOS)
            tail = data[-1:] if data[-1:] == b"\xff" else b""
        return count


def check_jpeg_scans(source: bytes | str | Path, limit: int = MAX_JPEG_SCANS) -> None:
    """Raise :class:`ScanLimitError` when ``source`` is a JPEG with more than ``limit`` scans."""
    scans = jpeg_scan_count(source)
    if scans > limit:
        raise ScanLimitError(scans, limit)
