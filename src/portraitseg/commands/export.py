"""``portraitseg export``: write an ONNX or TFLite model (fp32/fp16/int8) and verify it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..export import (
    FORMATS,
    INT8_GRANULARITIES,
    ONNX_OPSET,
    OUTPUT_KINDS,
    PRECISIONS,
    ExportConfig,
    default_output_path,
    export_model,
    export_summary,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX or TFLite",
        description=(
            "Fold BatchNorm, convert MODEL ('default' or a .pt) to ONNX (NCHW) or TFLite (NHWC), "
            "optionally fp16 or int8, embed the I/O contract as metadata and verify the written "
            "file against PyTorch."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="'default' (bundled weights) or a .pt weights file")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="square input side, a multiple of 32 (default: the model's)")
    size.add_argument("--dynamic", action="store_true", help="dynamic batch/height/width (ONNX only)")
    p.add_argument("--flatten", action="store_true", help="output [N, H*W] instead of an image-shaped tensor")
    p.add_argument("--output-kind", choices=OUTPUT_KINDS, default="logits",
                   help="raw logits (default, matches PyTorch) or sigmoid probability")
    p.add_argument("--calib-data", metavar="DIR",
                   help="photos for int8 calibration (a folder, or a dataset root with images/)")
    p.add_argument("--calib-count", type=int, default=32, metavar="N", help="calibration photos (default 32)")
    p.add_argument("--int8-granularity", choices=INT8_GRANULARITIES, default="auto",
                   help="int8 weight scales; auto quantises both and keeps the one closer to fp32")
    p.add_argument("--verify-data", metavar="DIR",
                   help="photos to verify the export on (default: random images)")
    p.add_argument("--verify-count", type=int, default=8, metavar="N")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    p.add_argument("--threads", type=int, default=1, help="runtime threads used for verification")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    p.add_argument("-o", "--output", type=Path,
                   help="output file (default: <model>-<size>-<precision>.<ext>)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    return ExportConfig(
        format=args.format, precision=args.precision, size=args.size, dynamic=args.dynamic,
        flatten=args.flatten, output_kind=args.output_kind, opset=args.opset, calib_data=args.calib_data,
        calib_count=args.calib_count, int8_granularity=args.int8_granularity, verify_data=args.verify_data,
        verify_count=args.verify_count, threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model

    cfg = config_from_args(args)
    cfg.validate()  # fail on bad options before loading anything
    model = load_model(args.model)
    output = args.output or default_output_path(args.model, cfg, model.config.input_size)
    result = export_model(model, output, cfg)
    if args.json:
        print(json.dumps(export_summary(result), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0
