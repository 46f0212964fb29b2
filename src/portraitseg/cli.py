"""The ``portraitseg`` command: one CLI, modes as subcommands (one module per command).

Only the command being run is imported (``portraitseg --help`` imports none), so the CLI starts
without loading torch, OpenCV or onnxruntime; each command imports its heavy modules in ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# The one install hint (also used below the CLI, which may not import cli): portraitseg.locate.
from .locate import install_hint

# name -> one-line help for the top-level listing. Each is a module ``portraitseg.commands.<name>``
# defining ``add_parser`` (which sets ``func``) with the same help (tests/test_cli.py checks).
COMMANDS: dict[str, str] = {
    "train": "train a model on cached data",
    "finetune": "adapt the bundled model to your own labelled photos",
    "eval": "evaluate models (ours and peers) on labelled datasets",
    "predict": "segment images: masks, cut-outs, composites, preview grids",
    "bulk": "segment many images on a Ray cluster (predict's outputs, resumable)",
    "export": "export a model to ONNX or TFLite",
    "bench": "per-stage latency of the video pipeline, ours vs peers",
    "prepare": "composite labelled people onto random backgrounds (offline)",
    "cache": "build a training cache from dataset folders",
    "serve": "HTTP API + web app",
    "video": "segment a video file (background replacement, mask, RGBA frames)",
    "webcam": "live segmentation from a camera, stream or file (window, file or virtual camera)",
}
# Third-party modules that only an optional extra installs (pyproject.toml) -> that extra.
EXTRA_FOR_MODULE: dict[str, str] = {
    "torch": "train",
    "onnx": "train",
    "matplotlib": "train",
    "ai_edge_litert": "tflite",
    "litert_torch": "tflite-export",
    "fastapi": "server",
    "uvicorn": "server",
    "multipart": "server",
    "ray": "ray",
}


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


def missing_extra(exc: ModuleNotFoundError, extra: str | None = None) -> CLIError | None:
    """The one-line error for a missing optional dependency (naming the extra that installs
    it, and the command that installs it here: :func:`install_hint`), or None when ``exc`` is
    about something else (a real bug: let it surface)."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRA_FOR_MODULE:
        return None
    extra = extra or EXTRA_FOR_MODULE[root]
    return CLIError(f"{root} is not installed; this command needs the '{extra}' extra: {install_hint(extra)}")


@contextmanager
def requires_extra(extra: str | None = None) -> Iterator[None]:
    """Turn a missing optional dependency imported inside the block into :func:`missing_extra`'s
    CLIError (e.g. torch for ``train``: ``pip install 'portraitseg[train]'``, or the clone's
    ``pip install '.[train]'``)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        err = missing_extra(exc, extra)
        if err is None:
            raise
        raise err from exc


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported (the others are
    listed by name and help)."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="portraitseg", description="Real-time portrait segmentation.")
    parser.add_argument("--version", action="version", version=f"portraitseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(f"portraitseg.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"portraitseg.commands.{name}":
                continue  # command not part of this build
            raise
        mod.add_parser(sub)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    # Top-level options take no values, so the first non-option word is the command.
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    from .memory import keep_freed_memory

    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    try:
        # A command module that imports an extra's package at the top fails here already.
        with requires_extra():
            parser = build_parser(only=command)
    except CLIError as exc:
        print(f"portraitseg {command}: error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    keep_freed_memory()  # every command handles frames: reuse freed ones instead of re-faulting
    try:
        with requires_extra():
            return int(args.func(args) or 0)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"portraitseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"portraitseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
