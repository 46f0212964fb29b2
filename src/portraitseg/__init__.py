"""portraitseg: real-time portrait segmentation (person vs background)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Segmenter", "load_image", "__version__"]

if TYPE_CHECKING:
    from .inference import Segmenter, load_image

# Lazy: `import portraitseg` (e.g. for the CLI or __version__) should not load numpy/OpenCV/
# onnxruntime until the inference API is actually used.
_LAZY = {"Segmenter": "inference", "load_image": "inference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
