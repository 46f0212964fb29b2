"""``portraitseg train``: train a Mobile-UNet from caches (see ``portraitseg cache``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

from ..cli import requires_extra
from ..train.config import TrainConfig, field_help, read_yaml

_SCALARS = (int, float, str, bool)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on cached data",
        description="Train a Mobile-UNet. Options come from the defaults (the bundled model's recipe), "
        "then each --config YAML in order, then flags.",
    )
    p.add_argument(
        "--config",
        type=Path,
        action="append",
        default=[],
        help="YAML file with TrainConfig fields, e.g. configs/default.yaml; repeat it to layer a recipe over "
        "the run file (--config configs/default.yaml --config configs/cpu_finetune.yaml): a later file "
        "wins, mappings (augment, source_weights, ...) merge key by key",
    )
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    p.add_argument("--train-cache", nargs="+", help=field_help(fields["train_cache"]))
    p.add_argument("--val-cache", nargs="+", help=field_help(fields["val_cache"]))
    p.add_argument("--resume", type=Path, help="continue from a last.pt written by an earlier run "
                   "(--epochs / --set epochs=N re-plans the remaining schedule to N epochs)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an existing run folder, deleting its checkpoints, metrics and graphs "
                   "(without it, an existing --run is refused)")
    p.add_argument(
        "--set",
        nargs="*",
        action="extend",  # a second --set adds to the first instead of silently replacing it
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set augment.composite_p=0.5 model_overrides.width=0.75 "
        "source_weights.eg1800=2",
    )
    for f in fields.values():
        if f.default_factory is not dataclasses.MISSING:
            continue  # lists and mappings: --train-cache/--val-cache above, the rest through --set
        flag = "--" + f.name.replace("_", "-")
        default_type = type(f.default) if f.default is not None else str
        if default_type is bool:
            p.add_argument(flag, type=_parse_bool, default=None, metavar="BOOL", help=field_help(f))
        elif default_type in _SCALARS and f.default is not None:
            p.add_argument(flag, type=default_type, default=None, help=field_help(f))
        else:  # optional fields (None default): infer from the annotation text
            kind = float if "float" in str(f.type) else int if "int" in str(f.type) else str
            p.add_argument(flag, type=kind, default=None, help=field_help(f))
    p.set_defaults(func=run)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _apply_set(data: dict, items: list[str]) -> None:
    import yaml

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
    for path in args.config:
        merge_config(data, read_yaml(path))
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = value
    _apply_set(data, args.set)
    cfg = TrainConfig.from_dict(data)  # validated: a bad --set epochs=abc fails here, in one line
    epochs = explicit_epochs(args)
    if epochs is not None and cfg.time_budget_s and not _budget_on_command_line(args):
        # The flag is what the user asked for just now; a budget in a recipe file would re-fit
        # the run to another count after epoch 2 (--epochs 3 ran 13+ epochs).
        if _main_rank():
            print(f"note: --epochs {epochs} given: training {epochs} epoch(s); the config file's "
                  f"time_budget_s={cfg.time_budget_s:g} is not applied (add --time-budget-s to re-fit "
                  "to a budget)", file=sys.stderr)
        cfg.time_budget_s = None
    return cfg


def _main_rank() -> bool:
    """Rank 0, or not under torchrun: every rank runs this command, one of them speaks."""
    return os.environ.get("RANK", "0") == "0"


def _budget_on_command_line(args: argparse.Namespace) -> bool:
    return getattr(args, "time_budget_s", None) is not None or any(
        item.partition("=")[0] == "time_budget_s" for item in args.set
    )


def merge_config(data: dict, layer: dict) -> dict:
    """``layer`` over ``data`` in place: a recipe file sets a few augment keys without dropping
    the ones an earlier file set, the same way ``--set augment.k=v`` does."""
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            merge_config(data[key], value)
        else:
            data[key] = value
    return data


def explicit_epochs(args: argparse.Namespace) -> int | None:
    """Epochs given on this command line (``--epochs`` or ``--set epochs=N``), else None: a YAML
    value is the original plan, which a resumed run (maybe re-fitted to a time budget) keeps."""
    import yaml

    pairs = [item.partition("=") for item in args.set]
    given = [yaml.safe_load(value) for key, _, value in pairs if key == "epochs"]
    value = given[-1] if given else getattr(args, "epochs", None)
    return None if value is None else int(value)


def run(args: argparse.Namespace) -> int:
    from ..train.rundir import prepare_run_dir
    from ._common import sigterm_as_exit

    cfg = build_config(args)
    if args.resume is not None and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite starts one over: give one of them")
    with requires_extra("train"):
        from ..checkpoint import load_checkpoint, load_training_state, resolve_weights
        from ..train.trainer import train
    if args.resume is not None:
        load_training_state(args.resume)  # a junk or truncated file fails now, not after loading data
    elif cfg.init_weights:
        load_checkpoint(resolve_weights(cfg.init_weights))  # the same for the weights to start from
    prepare_run_dir(Path(cfg.out_dir) / cfg.run, args.resume, args.overwrite)
    with sigterm_as_exit():  # atomic saves remove their temporary file on the way out
        best = train(cfg, resume=args.resume, epochs=explicit_epochs(args) if args.resume else None)
    if not _main_rank():  # under torchrun only rank 0 writes, and says where
        return 0
    if not best.is_file():
        if math.isinf(load_training_state(best.with_name("last.pt"))["best_val"]):
            raise ValueError(f"{best.parent}: no epoch had a finite score, so no best.pt was written "
                             "(see metrics.csv)")
        # Resumed into another folder, and no epoch beat the run it continued.
        print(f"no best.pt in {best.parent}: no epoch improved on the best of the run it resumed "
              f"({args.resume})")
        return 0
    print(f"best weights: {best}")
    return 0
