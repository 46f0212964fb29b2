"""Our Mobile-UNet through PyTorch: the only runtime module that imports torch (lazily, in the
constructor), so ONNX/TFLite/peer use never pays for it."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .contracts import OURS_OUTPUT, Runtime, ours_input

if TYPE_CHECKING:
    import torch

TORCH_SUFFIXES = (".pt", ".pth")


def _one_thread_in_child() -> None:
    """After ``fork``: torch's OpenMP thread pool (GNU libgomp in the pip wheels) belongs to the
    parent and is not fork-safe, so the child's first multi-threaded op waits forever on
    threads that do not exist. One thread never enters the pool."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


@functools.cache  # once: at-fork handlers cannot be removed, only added
def _first_pid() -> int:
    """The pid of the process that made the first torch runtime (forked children inherit this
    cached answer, so a different ``os.getpid()`` means "in a fork child"), after installing
    the at-fork handler."""
    os.register_at_fork(after_in_child=_one_thread_in_child)
    return os.getpid()


def forked() -> bool:
    """True in a ``fork`` child of the process that made the first torch runtime."""
    return os.getpid() != _first_pid()


class TorchRuntime(Runtime):
    """Our Mobile-UNet in PyTorch (CPU, eval mode), from a model or a checkpoint/"default".

    Safe to use in a ``fork`` child (``multiprocessing``'s default on Linux): there it runs on
    one thread, as torch's OpenMP pool does not survive a fork (``threads`` > 1 would hang).
    """

    backend = "torch"

    def __init__(
        self,
        model: torch.nn.Module | str | Path,
        name: str | None = None,
        input_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        if isinstance(model, (str, Path)):
            from ..checkpoint import load_model

            name = name or (str(model) if str(model) == "default" else Path(model).stem)
            model = load_model(model)
        self.model = model.eval()
        self.name = name or "model"
        size = int(input_size or model.config.input_size)
        if size % 32:
            raise ValueError(f"{self.name}: input size {size} must be a multiple of 32")
        self.input_format = ours_input(size)
        self.output_format = OURS_OUTPUT
        self._threads = threads
        self._torch = torch
        _first_pid()

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        # torch's thread count is process-wide: set it for this call only (costs < 1 us), so
        # evaluating at 1 thread does not slow down whatever else runs in the process.
        previous = torch.get_num_threads()
        # In a fork child more than one thread hangs (_one_thread_in_child), whatever was asked
        # for, also for a runtime made in the child (the pool is still the parent's).
        threads = 1 if forked() else self._threads
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(tensor)).numpy()
        finally:
            torch.set_num_threads(previous)
