"""Export a Mobile-UNet to ONNX or TFLite (fp32 / fp16 / int8) and verify the result.

:func:`export_model` (:mod:`.exporter`) runs the whole job; the stages live in :mod:`.fuse`
(BatchNorm folding), :mod:`.onnx` and :mod:`.tflite` (conversion, quantisation, metadata) and
:mod:`.verify` (the written file through :func:`~portraitseg.runtimes.open_model` vs PyTorch).
This package imports torch; nothing on the inference side imports it.
"""

from __future__ import annotations

from ..runtimes import OUTPUT_KINDS, read_metadata
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
from .exporter import (
    ExportResult,
    ExportWrapper,
    contract_metadata,
    default_output_path,
    export_model,
    export_summary,
)
from .fuse import FUSION_ATOL, check_fusion, count_batchnorms, fuse_batchnorm, fuse_conv_bn
from .tflite import TFLITE_MISSING, tflite_available
from .verify import (
    VerifyReport,
    compare_outputs,
    list_images,
    load_images,
    pick_spread,
    random_images,
    verify_export,
)

__all__ = [
    "FORMATS", "FUSION_ATOL", "INPUT_NAME", "INT8_GRANULARITIES", "ONNX_OPSET", "OUTPUT_KINDS", "PRECISIONS",
    "SUFFIXES", "TFLITE_MISSING", "VERIFY_MAX_PROB_DIFF", "ExportConfig", "ExportResult", "ExportWrapper",
    "VerifyReport", "check_fusion", "compare_outputs", "contract_metadata", "count_batchnorms",
    "default_output_path", "export_model", "export_summary", "fuse_batchnorm", "fuse_conv_bn", "list_images",
    "load_images", "output_name", "pick_spread", "random_images", "read_metadata", "tflite_available",
    "verify_export",
]
