"""What one export does: :class:`ExportConfig` (its fields generate the ``portraitseg export``
flags) and the constants the export modules share."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import ANY, Bounds, check_options
from ..options import option as _opt
from ..runtimes import OUTPUT_KINDS

FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
INT8_GRANULARITIES = ("auto", "per-channel", "per-tensor")
ONNX_OPSET = 17
# Opsets our graph exports correctly at: 9-10 lack the bilinear Resize modes (verification fails
# by 0.16 in probability), below that Resize cannot be exported; 23 is the newest torch 2.13 writes.
ONNX_OPSETS = (11, 23)
INPUT_NAME = "image"
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}

# Verification fails (ValueError) when the exported model's person probability differs from
# PyTorch's by more than this anywhere. fp32 must match to float rounding; fp16 weights and
# activations change logits by ~1e-3 relative, i.e. at most a few 1e-3 in probability on a
# trained model (slope of the sigmoid <= 0.25). int8 is judged by mask agreement instead,
# so it only gets the report (its error depends on the calibration set).
VERIFY_MAX_PROB_DIFF: dict[str, float | None] = {"fp32": 1e-4, "fp16": 0.05, "int8": None}
INT8_SELECTION_IMAGES = 12  # held-out photos that decide per-channel vs per-tensor


@dataclass(frozen=True)
class ExportConfig:
    """Options of one export; ``size=None`` means the model's training ``input_size``."""

    format: str = _opt("onnx", "ONNX (NCHW) or TFLite (NHWC)", choices=FORMATS)
    precision: str = _opt("fp32", "weights/compute precision; int8 needs --calib-data", choices=PRECISIONS)
    size: int | None = _opt(None, "square input side, a multiple of 32 (default: the model's)", type=int,
                            bounds=Bounds(low=32))
    dynamic: bool = _opt(False, "dynamic batch/height/width (ONNX only; excludes --size)")
    flatten: bool = _opt(False, "output [N, H*W] instead of an image-shaped tensor")
    output_kind: str = _opt("logits", "raw logits (as PyTorch) or sigmoid probability", choices=OUTPUT_KINDS)
    opset: int = _opt(ONNX_OPSET, f"ONNX opset, {ONNX_OPSETS[0]}-{ONNX_OPSETS[1]}",
                      bounds=Bounds(*ONNX_OPSETS))
    calib_data: str | None = _opt(None, "photos for int8 calibration (a folder, or a dataset root with "
                                  "images/)", metavar="DIR")
    calib_count: int = _opt(32, "calibration photos", metavar="N", bounds=Bounds(low=1))
    int8_granularity: str = _opt("auto", "int8 weight scales; auto quantises both and keeps the one closer "
                                 "to fp32", choices=INT8_GRANULARITIES)
    verify_data: str | None = _opt(None, "photos to verify the export on (default: random images)",
                                   metavar="DIR")
    verify_count: int = _opt(8, "images to verify on", metavar="N")
    threads: int = _opt(1, "runtime threads used for verification", bounds=Bounds(low=1))
    seed: int = _opt(0, "seed of the random verification images", bounds=ANY)

    def validate(self) -> None:
        """Raise ValueError with a one-line message for a value out of its range or an impossible
        combination (the flags check ranges as they are parsed; this covers the library)."""
        check_options(self)
        for name, value, allowed in (
            ("format", self.format, FORMATS),
            ("precision", self.precision, PRECISIONS),
            ("output kind", self.output_kind, OUTPUT_KINDS),
            ("int8 granularity", self.int8_granularity, INT8_GRANULARITIES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if self.size is not None and (self.size <= 0 or self.size % 32):
            raise ValueError(f"--size must be a positive multiple of 32 (the stride); got {self.size}")
        if self.dynamic and self.size is not None:
            raise ValueError("--size and --dynamic exclude each other")
        if self.dynamic and self.format == "tflite":
            raise ValueError("--dynamic is only supported for ONNX; give TFLite a fixed --size")
        if self.precision == "int8" and not self.calib_data:
            raise ValueError("int8 needs --calib-data DIR with real photos to calibrate activation ranges")
        if self.calib_count < 1 or self.verify_count < 0:
            raise ValueError("--calib-count must be >= 1 and --verify-count >= 0")


def output_name(cfg: ExportConfig) -> str:
    """Name of the exported graph's output (and the TFLite signature's)."""
    return "probability" if cfg.output_kind == "probability" else "logits"
