"""``portraitseg export``: write an ONNX or TFLite model (fp32/fp16/int8) and verify it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import add_config_flags, add_overwrite_flag, config_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..export.config import ExportConfig

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
    add_config_flags(p, ExportConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    p.add_argument("-o", "--output", type=Path,
                   help="output file (default: <model>-<size>-<precision>.<ext>, <model> = "
                   "'portraitseg' for default)")
    add_overwrite_flag(p)
    p.set_defaults(func=run)


def config_from_cli(args: argparse.Namespace):
    from ..export.config import ExportConfig

    return config_from_args(ExportConfig, args)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_model
    from ..export import default_output_path, export_model, export_summary
    from ..outfiles import check_outputs

    cfg = config_from_cli(args)
    cfg.validate()  # fail on bad options before loading anything
    model = load_model(args.model)
    output = args.output or default_output_path(args.model, cfg, model.config.input_size)
    # An earlier export is a result like any other: kept unless --overwrite (export_model itself
    # replaces, for callers that manage their own files, e.g. finetune).
    check_outputs({"-o" if args.output else "output": output}, overwrite=args.overwrite, make_folders=True)
    result = export_model(model, output, cfg)
    if args.json:
        print(json.dumps(export_summary(result), indent=2))
    else:
        print("\n".join(result.lines()))
    return 0
