"""portraitseg: real-time portrait segmentation (person vs background)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_getattr

__version__ = "0.1.0"
__all__ = ["Segmenter", "load_image", "__version__"]

if TYPE_CHECKING:
    from .inference import Segmenter, load_image

# Lazy: `import portraitseg` (e.g. for the CLI or __version__) should not load numpy/OpenCV/
# onnxruntime until the inference API is actually used.
__getattr__ = lazy_getattr(__name__, {"Segmenter": ".inference", "load_image": ".inference"})
