"""Real small or read-only file systems for write-failure tests: a tmpfs mounted for the test
(root can; elsewhere the test skips saying why). Faking ENOSPC with a patched writer would
miss how each library really fails (torch.save's zip writer raised a RuntimeError)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """Mount a ``size`` tmpfs (read-only with ``read_only``) at ``path`` for the block."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        why = mounted.stderr.strip()
        pytest.skip(f"cannot mount a tmpfs for a real full/read-only disk (needs root): {why}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
