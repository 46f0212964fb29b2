"""Our Mobile-UNet through PyTorch: the only runtime module that imports torch (lazily, in the
constructor), so ONNX/TFLite/peer use never pays for it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .contracts import OURS_OUTPUT, Runtime, ours_input

if TYPE_CHECKING:
    import torch

TORCH_SUFFIXES = (".pt", ".pth")


class TorchRuntime(Runtime):
    """Our Mobile-UNet in PyTorch (CPU, eval mode), from a model or a checkpoint/"default"."""

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

    @property
    def num_threads(self) -> int | None:
        return self._threads

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        # torch's thread count is process-wide: set it for this call only (costs < 1 us), so
        # evaluating at 1 thread does not slow down whatever else runs in the process.
        previous = torch.get_num_threads()
        if self._threads is not None:
            torch.set_num_threads(self._threads)
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(tensor)).numpy()
        finally:
            torch.set_num_threads(previous)
