"""``portraitseg finetune DATA... -o OUT``: the bundled model adapted to a user's data (the
trainer with the recipe of :mod:`portraitseg.finetune.recipe`; see docs/finetune.md)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..finetune.recipe import FinetuneRecipe
from ._common import add_config_flags, config_changes, thread_count, write_errors_exit_1

# Recipe fields with a flag of their own; the rest (train, replay_sets, ...) through --recipe FILE.
FLAGS = ("minutes", "input_size", "export_size", "val_fraction", "replay_share", "replay_max", "bf16",
         "freeze_bn", "init_weights", "seed")

DESCRIPTION = """\
Fine-tune the bundled model on your labelled photos, on the CPU, for --minutes.

DATA: folders in our layout (images/ + masks/ with 0/255 or 0/1 masks, or alpha/ 0..255), or
any folder of pairs found by name: x.jpg + x_mask.png, or x.jpg + x.png. Without --val, each
folder's train.txt + val.txt are used when it has both, else a share (--val-fraction) is held
out by itself. A share of the bundled training data (../shared/data, or --replay DIR) is mixed
in so the model keeps working on people in general.

Writes OUT/model.onnx (and model.tflite when the converter is installed), both verified against
PyTorch, OUT/model.pt, OUT/MODEL_CARD.md with the before/after table on the held-out images,
OUT/report.json, and the caches and checkpoints needed to --resume. Ctrl-C keeps the best epoch
so far and still writes the report. Exit 1 when files were left out (listed), 130 when
interrupted.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="adapt the bundled model to your own labelled photos",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="+", type=Path, metavar="DATA", help="labelled folder(s)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--val", action="append", type=Path, default=[], metavar="DIR",
                   help="a held-out folder to judge the result on, repeatable (then all of DATA is "
                   "trained on)")
    p.add_argument("--replay", type=Path, metavar="DIR",
                   help="the bundled training data (default: ../shared/data if there), or one dataset folder")
    p.add_argument("--no-replay", action="store_true", help="do not mix in bundled training data")
    p.add_argument("--recipe", type=Path, metavar="FILE",
                   help="YAML over the built-in recipe (configs/finetune.yaml shows every field)")
    p.add_argument("--resume", action="store_true",
                   help="continue the fine-tune in OUT for another --minutes (same DATA)")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in OUT (its caches are reused where their inputs are unchanged)")
    p.add_argument("--threads", type=thread_count, metavar="N",
                   help="CPU threads for training and evaluation (default: all cores; on a busy machine 1 "
                   "avoids threads spin-waiting on each other)")
    add_config_flags(p.add_argument_group("recipe (defaults: configs/finetune.yaml)"), FinetuneRecipe,
                     only=FLAGS)
    p.set_defaults(func=run)


def recipe_from_args(args: argparse.Namespace) -> FinetuneRecipe:
    """The built-in recipe, then --recipe FILE, then the flags given."""
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a fine-tune and --overwrite starts one over: give one of them")
    base = FinetuneRecipe.from_yaml(args.recipe) if args.recipe else FinetuneRecipe()
    changes = config_changes(FinetuneRecipe, args, only=FLAGS)
    if args.resume and set(changes) - {"minutes"}:
        given = ", ".join("--" + k.replace("_", "-") for k in sorted(set(changes) - {"minutes"}))
        raise ValueError(f"--resume continues with the recipe the fine-tune started with; only --minutes "
                         f"may change (got {given})")
    return FinetuneRecipe.from_dict({**base.to_dict(), **changes})


def command_line(args: argparse.Namespace) -> str:
    """The command as run (canonical form), for the model card."""
    parts = ["portraitseg", "finetune", *map(str, args.data), "-o", str(args.out)]
    if args.val:
        parts += ["--val", *map(str, args.val)]
    for flag in ("replay", "recipe", "threads"):
        if getattr(args, flag) is not None:
            parts += [f"--{flag}", str(getattr(args, flag))]
    parts += [f"--{f.replace('_', '-')}" for f in ("no_replay", "resume", "overwrite") if getattr(args, f)]
    for name, value in config_changes(FinetuneRecipe, args, only=FLAGS).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{flag[2:]}")
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


@write_errors_exit_1("finetune")  # a read-only or full disk: one line, exit 1
def run(args: argparse.Namespace) -> int:
    from ..cli import requires_extra

    recipe = recipe_from_args(args)  # bad options fail before any work
    with requires_extra("train"):
        from ..checkpoint import load_checkpoint, resolve_weights
        from ..finetune.job import FinetuneJob, finetune
    if not args.resume:  # a wrong file fails now, not after the caches are built
        load_checkpoint(resolve_weights(recipe.init_weights))
    job = FinetuneJob(data=list(args.data), out=args.out, recipe=recipe, val=list(args.val),
                      replay=args.replay,
                      no_replay=args.no_replay, resume=args.resume, overwrite=args.overwrite,
                      threads=args.threads, command=command_line(args))
    return finetune(job).exit_code
