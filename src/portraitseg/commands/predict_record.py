"""What earlier ``predict`` runs finished in an output folder, so a rerun (after Ctrl-C, or of the
same command) skips those images WITHOUT decoding them or running the model: before this, "132
already up to date" still took 24 s of work that was then thrown away (issue 18).

The record is one append-only JSON-lines file, ``OUTDIR/.portraitseg-predict.jsonl``, one line
per output file written (or found identical): its path relative to OUTDIR, the sha256 of its
bytes, of the input file, and of the *recipe* (everything else that decides those bytes: the
output kind, the model's behaviour, the post-processing, the background, the version). An
output is up to date when its latest line matches the current input and recipe AND the file
still has the recorded bytes. Anything else (no line, an input, model or option that changed, an
output edited by hand) falls back to computing the image, where predict's rule still applies:
identical bytes are left alone, different ones refused without ``--overwrite``. So the record
can only save work, never change what is written.

Why a record and not modification times: copying photos keeps neither order nor times, and a
new model or option must not be mistaken for "nothing to do".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

RECORD_NAME = ".portraitseg-predict.jsonl"
CHUNK = 1 << 20
# Rewrite the record without superseded lines once they outnumber the live ones by this much.
COMPACT_SLACK = 1000


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (read in chunks: inputs may be large photos)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def recipe_digest(parts: Mapping[str, object]) -> str:
    """A stable hash of JSON-able settings (tuples become lists, other objects their str)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Entry:
    output: str  # sha256 of the output file's bytes
    input: str
    recipe: str

    def line(self, key: str) -> str:
        return json.dumps({"out": key, "output": self.output, "input": self.input, "recipe": self.recipe},
                          separators=(",", ":"))


@dataclass
class Record:
    """The record of one output folder (see the module docstring)."""

    outdir: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    writable: bool = True

    @property
    def path(self) -> Path:
        return self.outdir / RECORD_NAME

    @classmethod
    def load(cls, outdir: Path) -> Record:
        record = cls(outdir)
        try:
            lines = record.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return record
        except (OSError, UnicodeDecodeError) as exc:
            print(f"note: ignoring {record.path} ({exc}); every image is computed", file=sys.stderr)
            return record
        for line in lines:
            record._add_line(line)
        if len(lines) > len(record.entries) + COMPACT_SLACK:
            record._compact()
        return record

    def _add_line(self, line: str) -> None:
        try:
            data = json.loads(line)
            self.entries[str(data["out"])] = Entry(str(data["output"]), str(data["input"]),
                                                   str(data["recipe"]))
        except (ValueError, KeyError, TypeError):
            pass  # a torn last line from a killed run, or a foreign edit: that image is recomputed

    def _key(self, out: Path) -> str:
        return out.relative_to(self.outdir).as_posix()

    def up_to_date(self, outputs: Mapping[Path, str], input_digest: str) -> bool:
        """True when every output (path -> its recipe digest) is recorded for this input and
        recipe and still holds the recorded bytes."""
        for out, recipe in outputs.items():
            entry = self.entries.get(self._key(out))
            if entry is None or entry.input != input_digest or entry.recipe != recipe:
                return False
            try:
                if file_digest(out) != entry.output:
                    return False
            except OSError:  # gone, or unreadable: compute it (which reports any real problem)
                return False
        return True

    def add(self, outputs: Mapping[Path, tuple[str, bytes]], input_digest: str) -> None:
        """Record one image's outputs (path -> (recipe digest, bytes now on disk)) with one
        append, so a kill leaves at most one torn line."""
        if not self.writable:
            return
        lines = []
        for out, (recipe, data) in outputs.items():
            entry = Entry(hashlib.sha256(data).hexdigest(), input_digest, recipe)
            key = self._key(out)
            self.entries[key] = entry
            lines.append(entry.line(key))
        try:
            self.outdir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, ("\n".join(lines) + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            # The outputs are written; only the shortcut for the next run is lost.
            self.writable = False
            print(f"note: cannot update {self.path} ({exc.strerror or exc}); a rerun will recompute "
                  "instead of skipping finished images", file=sys.stderr)

    def _compact(self) -> None:
        from ..data.io import write_atomic

        text = "".join(e.line(k) + "\n" for k, e in self.entries.items())
        try:
            write_atomic(self.path, text.encode())
        except OSError:
            pass  # only a size optimisation
