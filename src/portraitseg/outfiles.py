"""Result files of a command: written atomically, never replacing an earlier result silently.

The rule ``predict`` follows for its outputs, as one mechanism for every command that writes
results: an existing file with the same bytes is left as it is (a rerun succeeds), one with
different content is refused unless ``overwrite``, and that is decided for ALL files before
any is written. Writing problems (read-only folder, disk full, a folder where a file should
go) become one-line :class:`ValueError` messages naming the file, which the CLI prints as
``portraitseg CMD: error: ...`` with exit code 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .data.io import write_atomic


class OutputExistsError(ValueError):
    """An earlier result with different content is in the way (and ``overwrite`` is off)."""


@dataclass
class WritePlan:
    """What :func:`plan_writes` decided: files to (re)write and files already up to date."""

    todo: dict[Path, bytes] = field(default_factory=dict)
    unchanged: list[Path] = field(default_factory=list)


def _exists_message(path: Path) -> str:
    return f"output {path} exists with different content (use --overwrite)"


def _nearest_existing(path: Path) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return Path(path.absolute().anchor)


def check_writable(path: str | Path, overwrite: bool, what: str) -> None:
    """Fail fast, before a long run, where writing ``path`` later would fail or clobber: it is
    a folder, it exists (and ``overwrite`` is off), or the folder it would go into cannot be
    created or written. ``what`` names the option (``--json``) in the message.

    Only a check: a full disk or a file that appears meanwhile is still caught when writing.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder; give a file path")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{what} {path}: exists (use --overwrite to replace it)")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise ValueError(f"{what} {path}: {base} is a file, not a folder")
    # access() also reports a read-only file system (EROFS), which root's permissions do not.
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: cannot write into {base} (read-only or no permission)")


def check_folder_writable(folder: str | Path, paths: Iterable[Path], overwrite: bool, what: str) -> None:
    """:func:`check_writable` for an output folder and the files a run will put into it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder}: is a file, not a folder")
    for path in paths:
        check_writable(path, overwrite, what)


def plan_writes(files: Mapping[Path, bytes], overwrite: bool) -> WritePlan:
    """Sort ``files`` into to-write and unchanged; raise :class:`OutputExistsError` for the
    first one whose earlier content differs (unless ``overwrite``), before anything is written."""
    plan = WritePlan()
    for path, data in files.items():
        if path.is_file() and path.read_bytes() == data:
            plan.unchanged.append(path)
        elif path.exists() and not overwrite:
            raise OutputExistsError(_exists_message(path))
        else:
            plan.todo[path] = data
    return plan


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Write each file atomically (temporary file + rename); an OS error becomes one line
    naming the file and how many of the others were already written."""
    written: list[Path] = []
    for path, data in files.items():
        try:
            write_atomic(path, data)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            done = f"; {len(written)} of {len(files)} file(s) were written before it" if written else ""
            raise ValueError(f"{path}: cannot write ({reason}){done}") from exc
        written.append(path)
    return written


def write_results(files: Mapping[Path, bytes], overwrite: bool) -> WritePlan:
    """:func:`plan_writes` then :func:`write_files`: the whole no-clobber write of a result."""
    plan = plan_writes(files, overwrite)
    write_files(plan.todo)
    return plan
