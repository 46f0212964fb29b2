"""A crafted .pt whose unpickling would run a shell command: the attack a checkpoint loader must
refuse (``torch.load`` without ``weights_only``). Shared by the checkpoint, train and export tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_code_running_pt(path: Path, marker: Path, key: str = "note") -> Path:
    """A checkpoint-shaped dict at ``path`` whose ``key`` entry, once unpickled, creates ``marker``
    (so a test can assert the file never appears)."""
    torch.save({"model_config": {}, "model": {}, key: _RunsCode(marker)}, path)
    return path
