"""The ``portraitseg`` command: one CLI, modes as subcommands (one module per command)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each is a module ``portraitseg.commands.<name>`` defining ``add_parser`` (which sets ``func``).
COMMANDS: tuple[str, ...] = (
    "train", "eval", "predict", "export", "bench", "prepare", "cache", "serve", "video", "webcam",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="portraitseg", description="Real-time portrait segmentation.")
    parser.add_argument("--version", action="version", version=f"portraitseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        try:
            mod = importlib.import_module(f"portraitseg.commands.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"portraitseg.commands.{module}":
                continue  # command not part of this build
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .memory import keep_freed_memory

    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # every command handles frames: reuse freed ones instead of re-faulting
    try:
        return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"portraitseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"portraitseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
