"""Export a Mobile-UNet to ONNX or TFLite (fp32 / fp16 / int8) and verify the result.

:func:`export_model` (:mod:`.exporter`) runs the whole job; the stages live in :mod:`.fuse`
(BatchNorm folding), :mod:`.onnx` and :mod:`.tflite` (conversion, quantisation, metadata) and
:mod:`.verify` (the written file through :func:`~portraitseg.runtimes.open_model` vs PyTorch).
:mod:`.config` (:class:`ExportConfig`) is light; everything else imports torch, lazily on first
use, so the CLI can build ``export``'s flags without it.
"""

from __future__ import annotations

from ..lazy import lazy_getattr
from .config import (
    FORMATS,
    INPUT_NAME,
    INT8_GRANULARITIES,
    ONNX_OPSET,
    PRECISIONS,
    SUFFIXES,
    VERIFY_MAX_PROB_DIFF,
    ExportConfig,
    output_name,
)

_LAZY = {
    "exporter": ("ExportResult", "ExportWrapper", "contract_metadata", "default_output_path", "export_model",
                 "export_summary"),
    "fuse": ("FUSION_ATOL", "check_fusion", "count_batchnorms", "fuse_batchnorm", "fuse_conv_bn"),
    "tflite": ("tflite_available", "tflite_missing"),
    "verify": ("VerifyReport", "compare_outputs", "list_images", "load_images", "pick_spread",
               "random_images", "verify_export"),
}
_WHERE = {name: f".{module}" for module, names in _LAZY.items() for name in names}
__all__ = ["FORMATS", "INPUT_NAME", "INT8_GRANULARITIES", "ONNX_OPSET", "OUTPUT_KINDS", "PRECISIONS",
           "SUFFIXES", "VERIFY_MAX_PROB_DIFF", "ExportConfig", "output_name", "read_metadata", *_WHERE]


# Lazy (torch): the CLI builds export's flags from .config without it.
__getattr__ = lazy_getattr(__name__, {**_WHERE, "OUTPUT_KINDS": "..runtimes", "read_metadata": "..runtimes"})
