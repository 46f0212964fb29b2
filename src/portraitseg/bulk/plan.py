"""The driver's side of a file job: ``predict``'s inputs, names and checks turned into Ray Data
rows (:func:`plan_jobs`), each carrying what ``predict``'s record
(:mod:`~portraitseg.commands.predict_record`) says about its outputs.

Resuming is predict's mechanism, spread over the cluster: the driver reads the record once and
hands each row its own entries; the worker that reads the image hashes it and its outputs and
skips it when :meth:`Record.up_to_date <portraitseg.commands.predict_record.Record.up_to_date>`
says so (no decoding, no model); the worker that writes an image's outputs appends its lines to
the same record file. So ``bulk`` and ``predict`` resume each other's runs, and the driver never
reads the images (it would be the bottleneck of a large job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..commands.predict import Job, output_paths
from ..commands.predict_record import Entry, Record
from .stages import output_column


@dataclass
class Plan:
    """Images to run (``rows``: one Ray Data row each) and images refused before running
    (``failed``: 'path: problem' lines, predict's naming checks)."""

    rows: list[dict[str, object]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def entries_text(record: Record, outputs: list[Path]) -> str:
    """The record's entries for these outputs, as the JSON a row carries ('' for none)."""
    found = {}
    for out in outputs:
        key = out.relative_to(record.outdir).as_posix()
        if key in record.entries:
            entry = record.entries[key]
            found[key] = [entry.output, entry.input, entry.recipe]
    return json.dumps(found) if found else ""


def row_record(outdir: str, text: str) -> Record:
    """A worker's read-only view of the record: the entries its row carries."""
    entries = {k: Entry(*v) for k, v in json.loads(text).items()} if text else {}
    return Record(Path(outdir), entries, writable=False)


def plan_jobs(jobs: list[Job], outdir: Path, kinds: tuple[str, ...], composite_format: str,
              record: Record | None) -> Plan:
    """predict's naming and checks for each job (an output that is an input, two inputs with
    one output name); ``record=None`` (``--overwrite``) recomputes every image."""
    from ..commands.predict import check_job_outputs, job_claims
    from .stages import error_line

    plan = Plan()
    claims = job_claims(jobs)
    for job in jobs:
        paths = output_paths(job, outdir, list(kinds), composite_format)
        try:
            check_job_outputs(paths, claims, job)
        except ValueError as exc:
            plan.failed.append(error_line(str(job.path), exc))
            continue
        row: dict[str, object] = {"idx": len(plan.rows), "path": str(job.path),
                                  "src": str(job.path.resolve()),
                                  "record": entries_text(record, list(paths.values())) if record else ""}
        row.update({output_column(k): str(p.resolve()) for k, p in paths.items()})
        plan.rows.append(row)
    return plan
