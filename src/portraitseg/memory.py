"""Process-wide allocator tuning for frame-rate work.

Why: a 1280x720 RGB frame is 2.7 MB. glibc serves blocks that large with ``mmap`` and gives
them back to the OS on ``free`` (or trims the heap once 2x the block is free), so every
freshly allocated frame -- ``cv2.imdecode``'s output, a model's output, a resized copy -- is
new memory that takes one page fault per 4 KiB on first touch. On the VMs we measure on that
is ~1,300 faults and ~2 ms per decoded 720p JPEG, as much as the decoding itself. Raising the
mmap and trim thresholds makes glibc keep freed blocks and hand them out again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt() parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit; larger blocks still use mmap
TRIM_THRESHOLD = 256 << 20  # free heap kept before returning memory to the OS


def keep_freed_memory(trim_threshold: int = TRIM_THRESHOLD, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Ask glibc to reuse freed frame-sized blocks instead of returning them to the OS.

    Costs up to ``trim_threshold`` bytes of freed-but-kept memory; saves the page faults of
    re-allocating frames (720p JPEG decode: 3.8 -> 1.7 ms on one core here). The ``portraitseg``
    command calls it on start; call it yourself in a long-running video loop. Returns False
    (and changes nothing) where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(
        mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))
    )


def release_freed_memory() -> bool:
    """Give freed heap memory back to the OS now (glibc ``malloc_trim(0)``, all arenas).

    For long-running processes after a rare large job (the server after a 25 MP image): the
    thresholds above otherwise keep up to ``trim_threshold`` of freed memory per arena for
    good. Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True
