"""``portraitseg train``: train a Mobile-UNet from caches (see ``portraitseg cache``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from ..train import TrainConfig, train

_SCALARS = (int, float, str, bool)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on cached data",
        description="Train a Mobile-UNet. Options come from the defaults, then --config YAML, then flags.",
    )
    p.add_argument("--config", type=Path, help="YAML file with TrainConfig fields")
    p.add_argument("--train-cache", nargs="+", help="training cache file(s) (.npz from `portraitseg cache`)")
    p.add_argument("--val-cache", nargs="+", help="validation cache file(s)")
    p.add_argument("--resume", type=Path, help="continue from a last.pt written by an earlier run")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set augment.composite_p=0.5 model_overrides.width=0.75",
    )
    for f in dataclasses.fields(TrainConfig):
        if f.default_factory is not dataclasses.MISSING:
            continue  # lists and mappings: --train-cache/--val-cache above, the rest through --set
        flag = "--" + f.name.replace("_", "-")
        default_type = type(f.default) if f.default is not dataclasses.MISSING else str
        if default_type is bool:
            p.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL")
        elif default_type in _SCALARS:
            p.add_argument(flag, type=default_type, default=None)
        else:  # optional fields (None default): infer from the annotation text
            kind = float if "float" in str(f.type) else int if "int" in str(f.type) else str
            p.add_argument(flag, type=kind, default=None)
    p.set_defaults(func=run)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _apply_set(data: dict, items: list[str]) -> None:
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)


def build_config(args: argparse.Namespace) -> TrainConfig:
    data: dict = {}
    if args.config:
        if not args.config.is_file():
            raise FileNotFoundError(f"{args.config}: config file not found")
        data = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{args.config}: expected a mapping of TrainConfig fields")
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    _apply_set(data, args.set)
    return TrainConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    best = train(cfg, resume=args.resume)
    print(f"best weights: {best}")
    return 0
