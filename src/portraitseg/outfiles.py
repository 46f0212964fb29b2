"""Result files of a command: checked before any work, written atomically, never replacing an
input or an earlier result silently. The one mechanism every command's outputs go through.

Before any work (:func:`check_outputs`, or :class:`OutputClaims` for outputs named per input):
an output that is an input or another output is refused (symbolic links, hard links and ``..``
resolved; even with ``overwrite``: nothing a command reads is ever replaced), so is an existing
output unless ``overwrite``, a folder given as a file, and a folder that is missing (where the
command does not create it) or cannot be written (probed by creating a file in it).

When writing (:func:`write_results`, the rule ``predict`` follows): an existing file with the same
bytes is left as it is (a rerun succeeds), one with different content is refused unless
``overwrite``, decided for ALL files before any is written; each file goes through a temporary
file + rename. Every problem is one line naming the option and the file: an :class:`OutputError`
(a ValueError, which the CLI prints as ``portraitseg CMD: error: ...`` with exit code 2), or a
ValueError naming the file for a write that fails (read-only folder, disk full).
"""

from __future__ import annotations

import errno as errno_codes
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .data.io import write_atomic

# ``label -> path`` or ``(label, path)`` pairs (a label may repeat: several models, report files).
# None paths are skipped (an option not given).
Named = Mapping[str, "str | Path | None"] | Iterable[tuple[str, "str | Path | None"]]
_Key = tuple[object, ...]


class OutputError(ValueError):
    """An output that must not or cannot be written; the message names it (one line)."""


class OutputExistsError(OutputError):
    """An earlier result is in the way (and ``overwrite`` is off)."""


def _pairs(named: Named) -> list[tuple[str, Path]]:
    items = named.items() if isinstance(named, Mapping) else named
    return [(label, Path(p)) for label, p in items if p is not None]


def _keys(path: Path) -> list[_Key]:
    """What identifies the file ``path`` names: its resolved path (links and ``..`` resolved,
    also for a file that does not exist yet) and, when it exists, its inode (hard links).
    A list, in that order, so that messages do not depend on set order."""
    keys: list[_Key] = [("path", str(path.resolve()))]
    try:
        st = path.stat()
    except OSError:
        return keys
    return [*keys, ("inode", st.st_dev, st.st_ino)]


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: symbolic links, hard links and ``..`` resolved."""
    return not set(_keys(Path(a))).isdisjoint(_keys(Path(b)))


@dataclass
class OutputClaims:
    """The files one run reads and the outputs it has claimed, so that no output is an input or
    another output. For commands that name their outputs per input as they go (``predict``,
    ``bulk``: thousands of files, so lookups are by key, not pairwise); :func:`check_outputs`
    is the whole check for a command's few named outputs."""

    _inputs: dict[_Key, tuple[int, str, Path]] = field(default_factory=dict)  # key -> (order, label, path)
    _outputs: dict[_Key, str] = field(default_factory=dict)

    def add_inputs(self, inputs: Named) -> None:
        """Files the run reads; paths that are not files (a camera index, a colour, a folder)
        are ignored."""
        for label, path in _pairs(inputs):
            if path.is_file():
                for key in _keys(path):  # the first label given for a file names it
                    self._inputs.setdefault(key, (len(self._inputs), label, path))

    def claim(self, outputs: Named, owner: str | None = None) -> None:
        """Refuse an output that is an input or an output claimed before (all of ``outputs`` are
        checked before any is claimed); ``owner`` names them in later messages (default: each
        one's label)."""
        pairs = _pairs(outputs)
        claimed: dict[_Key, str] = {}
        for label, path in pairs:
            keys = _keys(path)
            read = sorted(self._inputs[k] for k in keys if k in self._inputs)
            if read:  # named after the first input given that is this file, as the user listed them
                _, in_label, src = read[0]
                raise OutputError(f"{label} {path} is the input {in_label} ({src}); refusing to overwrite it")
            taken = [self._outputs.get(k) or claimed.get(k) for k in keys]
            other = next((o for o in taken if o is not None), None)
            if other is not None:
                raise OutputError(f"{label} {path} is also {other}; give them different names")
            claimed.update(dict.fromkeys(keys, owner or label))
        self._outputs.update(claimed)


def check_folder(what: str, folder: str | Path, make_folders: bool, probed: set[Path] | None = None) -> None:
    """Refuse an output folder that is a file, that is missing (unless the command creates it:
    ``make_folders``, then the nearest existing folder above must be writable) or that cannot be
    written: creating a file in it is the one sure test (a read-only mount, no permission).
    ``what`` names the output (``-o out``); ``probed`` skips folders already probed."""
    folder = Path(folder)
    base = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not base.is_dir():
        raise OutputError(f"{what}: {base} is a file, not a folder")
    if base != folder and not make_folders:
        raise OutputError(f"{what}: output folder {folder} does not exist")
    if probed is not None and base in probed:
        return
    try:
        fd, name = tempfile.mkstemp(prefix=".portraitseg-probe-", dir=base)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(f"{what}: cannot write in {base}: {exc.strerror or exc}") from None
    if probed is not None:
        probed.add(base)


def check_outputs(outputs: Named, inputs: Named = (), overwrite: bool = False, *,
                  make_folders: bool = False) -> None:
    """Before any work, refuse (one line, :class:`OutputError`) each output file that is one of
    the ``inputs`` or another output, a folder, an existing file unless ``overwrite``, or one
    whose folder is missing (unless ``make_folders``: the command creates it) or not writable.

    Labels name each path in the messages (``"OUT"``, ``"--json"``). Only a check: a full disk or
    a file that appears meanwhile is still caught when writing (:func:`write_results`).
    """
    claims = OutputClaims()
    claims.add_inputs(inputs)
    probed: set[Path] = set()
    for label, out in _pairs(outputs):
        claims.claim([(label, out)], owner=f"{label} {out}")
        if out.is_dir():
            raise OutputError(f"{label} {out} is a folder; give a file name")
        if (out.exists() or out.is_symlink()) and not overwrite:
            raise OutputExistsError(f"{label} {out} exists (use --overwrite to replace it)")
        check_folder(f"{label} {out}", out.parent, make_folders, probed)


# --------------------------------------------------------------------------- writing


@dataclass
class WritePlan:
    """What :func:`plan_writes` decided: files to (re)write and files already up to date."""

    todo: dict[Path, bytes] = field(default_factory=dict)
    unchanged: list[Path] = field(default_factory=list)


def _same_bytes(path: Path, data: bytes) -> bool:
    # The size first: a large earlier result with another size is not read at all.
    return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data


def plan_writes(files: Mapping[Path, bytes], overwrite: bool) -> WritePlan:
    """Sort ``files`` into to-write and unchanged; raise :class:`OutputExistsError` for the
    first one whose earlier content differs (unless ``overwrite``), before anything is written."""
    plan = WritePlan()
    for path, data in files.items():
        if path.is_dir():  # --overwrite would not help: never a folder replaced by a file
            raise OutputError(f"output {path} is a folder; move it away or give another output folder")
        if _same_bytes(path, data):
            plan.unchanged.append(path)
        elif (path.exists() or path.is_symlink()) and not overwrite:
            raise OutputExistsError(f"output {path} exists with different content "
                                    "(use --overwrite to replace it)")
        else:
            plan.todo[path] = data
    return plan


class WriteError(ValueError):
    """A result that could not be written; the message names the file, ``errno`` is the OS's
    (so a batch can tell a full or read-only disk, where every next file fails too)."""

    def __init__(self, message: str, errno: int | None) -> None:
        super().__init__(message)
        self.errno = errno

    @property
    def out_of_space(self) -> bool:
        """A full disk, a quota or a read-only file system: nothing more can be written there."""
        return self.errno in (errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EROFS)


class OutOfSpace(Exception):
    """A batch (predict, bulk) stops: its output disk is full or read-only (a :class:`WriteError`
    whose ``out_of_space``), so every next image would fail the same way, one line each."""


STOPPED_LINE = "stopped (the output folder cannot take more files)"


def _in_the_way(path: Path) -> str | None:
    """A file where ``path`` needs a folder (the OS says only 'File exists' or 'Not a
    directory'), or a folder where it is to be a file."""
    if path.is_dir():
        return "a folder has that name"
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    return f"{blocker} is a file, not a folder" if blocker is not None else None


def write_files(files: Mapping[Path, bytes]) -> list[Path]:
    """Write each file atomically (temporary file + rename); an OS error becomes one line
    naming the file and how many of the others were already written (a :class:`WriteError`)."""
    written: list[Path] = []
    for path, data in files.items():
        try:
            write_atomic(path, data)
        except OSError as exc:
            reason = _in_the_way(path) or exc.strerror or str(exc)
            done = f"; {len(written)} of {len(files)} file(s) were written before it" if written else ""
            raise WriteError(f"{path}: cannot write ({reason}){done}", exc.errno) from exc
        written.append(path)
    return written


def write_results(files: Mapping[Path, bytes], overwrite: bool) -> WritePlan:
    """:func:`plan_writes` then :func:`write_files`: the whole no-clobber write of a result."""
    plan = plan_writes(files, overwrite)
    write_files(plan.todo)
    return plan
