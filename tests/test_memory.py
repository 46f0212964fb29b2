"""Allocator tuning: freed frame-sized blocks are reused instead of re-faulted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from portraitseg.memory import keep_freed_memory

# A frame loop's allocation pattern: per frame, a few fresh frame-sized blocks (decoded frame,
# resized copies, model output...) written and then freed together. Untuned glibc unmaps or
# trims them once their sum passes twice the last freed block, so every frame faults its
# pages in again (~1,300 faults per 720p JPEG decode in the bench). Prints faults per frame.
_PROBE = """
import resource, sys
import numpy as np
from portraitseg.memory import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def frame():
    blocks = [np.ones((720, 1280, 3), np.uint8) for _ in range(3)]
    del blocks
for _ in range(5):
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    frame()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def _faults_per_call(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tuned_process_reuses_frames_instead_of_faulting_them_in() -> None:
    tuned = _faults_per_call("tuned")
    plain = _faults_per_call("plain")
    # Three fresh 720p frames are ~2,000 pages: the tuned process reuses its freed blocks.
    assert tuned < 50, tuned
    assert plain > 1000, plain


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_reports_success_on_glibc() -> None:
    assert keep_freed_memory() is True
