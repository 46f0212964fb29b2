"""CLI helpers shared by the commands: flags generated from dataclass configs, so each default
and its help text live in one place (the config), and the common model/post-processing flags.

A config field becomes ``--field-name`` with the field's default (shown in the help) and the
help text in its ``metadata["help"]``. Optional metadata: ``flag`` (another flag name, kept for
CLI compatibility), ``type``, ``choices``, ``metavar``, ``scale`` (the flag is in bigger units:
field value = flag value x scale, e.g. MB -> bytes) and ``cli_default`` (where the command's
default differs from the library's, e.g. the server's ``./web`` folder). Booleans get
``--x/--no-x``. Flags default to ``None`` so that only what the user gave overrides the config.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..defaults import MAX_THREADS
from ..options import flag_name, flag_type

MISSING = dataclasses.MISSING


def positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1 (threads, pixels): ``-1``/``0`` would
    otherwise reach the runtime and mean something odd or fail deep inside it."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def thread_count(text: str) -> int:
    """argparse type for ``--threads``: 1 .. :data:`MAX_THREADS`."""
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS}, got {value}")
    return value


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (``kill``, a container stop) into SystemExit(143) inside the block, so
    ``finally``/``except BaseException`` clean-ups (temporary files) run as on Ctrl-C.

    Once the signal came, any exception leaving the block is that exit: a SystemExit raised
    inside a C extension's import (the model runtime loading) reaches us as "ImportError:
    initialization failed"."""
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        received.append(signum)
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test's worker): leave it be
        yield
        return
    try:
        yield
    except BaseException:
        if received:
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- outputs
# The checks of outputs before any work are portraitseg.outfiles.check_outputs (one mechanism).


def os_error_line(exc: OSError) -> str:
    """``path: reason`` for an OSError from the file system, its own message otherwise."""
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def write_errors_exit_1(command: str) -> Callable[[Callable[[argparse.Namespace], int]],
                                                   Callable[[argparse.Namespace], int]]:
    """Decorate a command's ``run``: an OSError (disk full, read-only folder, an encoder that
    died) becomes one line on stderr and exit code 1 instead of a traceback. A missing file is
    left to the CLI (its one line, exit code 2, like other bad input)."""

    def decorate(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(run)
        def guarded(args: argparse.Namespace) -> int:
            try:
                return run(args)
            except FileNotFoundError:
                raise
            except OSError as exc:
                print(f"portraitseg {command}: error: {os_error_line(exc)}", file=sys.stderr)
                return 1

        return guarded

    return decorate


def add_overwrite_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing outputs (an output that is an input is always refused)")


def add_max_pixels_flag(parser: argparse.ArgumentParser, default: int) -> None:
    """``--max-pixels N`` (the one limit of ``defaults.MAX_PIXELS``), for every image reader."""
    parser.add_argument("--max-pixels", type=positive_int, default=default, metavar="N",
                        help="refuse images larger than N pixels, read from the header before decoding; "
                        "they count as bad files (default: %(default)s)")


def report_skipped(skipped: list[str]) -> int:
    """Print ``skipped: <reason>`` per skipped file and a count; returns how many (the commands
    then exit 1, so a skipped file never passes silently)."""
    from ..data.io import one_line  # here: the CLI's --help imports this module and must stay fast

    for msg in skipped:
        print(f"skipped: {one_line(msg)}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} file(s) skipped", file=sys.stderr)
    return len(skipped)


def dest_name(field: dataclasses.Field) -> str:
    return flag_name(field).lstrip("-").replace("-", "_")


def field_default(field: dataclasses.Field) -> Any:
    """What the flag defaults to (the command's default, in the flag's units)."""
    if "cli_default" in field.metadata:
        return field.metadata["cli_default"]
    if field.default is not MISSING:
        value = field.default
    elif field.default_factory is not MISSING:
        value = field.default_factory()
    else:
        return None
    scale = field.metadata.get("scale")
    return value / scale if scale and value is not None else value


def _value_type(field: dataclasses.Field, default: Any) -> Any:
    if "type" in field.metadata:
        kind = field.metadata["type"]
    elif default is not None:
        kind = type(default)
    else:
        text = str(field.type)  # "int | None" (annotations are strings here)
        kind = float if "float" in text else int if "int" in text else str
    # Every thread count of every config: at least 1 (checked here once for all commands).
    kind = positive_int if kind is int and field.name.endswith("threads") else kind
    return flag_type(field, kind)  # the option's own range (options.check_value), at parse time


def _help(field: dataclasses.Field, default: Any) -> str:
    text = field.metadata.get("help", "")
    if "(default:" in text:  # the field words its own default (e.g. "the model's"): say it once
        return text
    shown = "off" if default is None else default
    return f"{text} (default: {shown})" if text else f"(default: {shown})"


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                     skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> None:
    """One flag per scalar field of the dataclass ``cls`` (nested configs are skipped)."""
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only) or "help" not in f.metadata:
            continue
        default = field_default(f)
        kwargs: dict[str, Any] = {"default": None, "help": _help(f, default), "dest": dest_name(f)}
        if isinstance(default, bool):
            parser.add_argument(flag_name(f), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        for key in ("choices", "metavar"):
            if key in f.metadata:
                kwargs[key] = f.metadata[key]
        parser.add_argument(flag_name(f), type=_value_type(f, default), **kwargs)


def config_changes(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = (),
                   only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (or with a command default), converted
    back to the config's units."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or (only is not None and f.name not in only) or "help" not in f.metadata:
            continue
        value = getattr(args, dest_name(f), None)
        if value is None:
            if "cli_default" not in f.metadata:
                continue
            value = f.metadata["cli_default"]
        changes[f.name] = _scaled(value, f.metadata.get("scale"), f)
    return changes


def _scaled(value: Any, scale: float | None, field: dataclasses.Field) -> Any:
    if not scale:
        return value
    scaled = value * scale
    return int(scaled) if field.metadata.get("integer", True) else scaled


def config_from_args(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = (),
                     only: tuple[str, ...] | None = None, **extra: Any) -> Any:
    """``cls(**defaults | flags given | extra)`` (``skip``/``only`` as in :func:`add_config_flags`)."""
    return cls(**{**config_changes(cls, args, skip, only), **extra})


# --------------------------------------------------------------------------- post-processing flags


def add_postprocess_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per PostprocessConfig field (help from the config), so the CLI mirrors the
    config as it evolves; ``--smoothstep EDGE0 EDGE1`` / ``--no-smoothstep`` for the pair."""
    from ..postprocess import PostprocessConfig

    group = parser.add_argument_group("post-processing (defaults: PostprocessConfig)")
    add_config_flags(group, PostprocessConfig, skip=("smoothstep",))
    smoothstep = next(f for f in dataclasses.fields(PostprocessConfig) if f.name == "smoothstep")
    group.add_argument("--smoothstep", nargs=2, type=float, metavar=("EDGE0", "EDGE1"),
                       help=_help(smoothstep, smoothstep.default))
    group.add_argument("--no-smoothstep", action="store_true", help="disable smoothstep")


def postprocess_config(args: argparse.Namespace):
    """The PostprocessConfig the post-processing flags describe (validated)."""
    from ..postprocess import PostprocessConfig

    changes = {}
    for f in dataclasses.fields(PostprocessConfig):
        if f.name == "smoothstep":
            if args.no_smoothstep:
                changes["smoothstep"] = None
            elif args.smoothstep is not None:
                changes["smoothstep"] = tuple(args.smoothstep)
        elif getattr(args, f.name) is not None:
            changes[f.name] = getattr(args, f.name)
    cfg = PostprocessConfig(**changes)
    cfg.validate()
    return cfg


# --------------------------------------------------------------------------- model flags

MODEL_HELP = "'default' (bundled model, fastest installed backend), a .pt/.onnx/.tflite file or a peer name"


def add_model_flag(parser: argparse.ArgumentParser, help: str = MODEL_HELP) -> None:
    parser.add_argument("--model", default="default", help=f"{help} (default: %(default)s)")
