"""A run folder's life cycle: refuse to train over an earlier run, start over only when asked,
and clean temporary files a killed run left. Kept free of torch (the CLI checks this before
loading any data)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..data.io import remove_stale_temps
from ..outfiles import check_outputs

# What a run writes into its folder (trainer.py / outputs.py), i.e. what --overwrite replaces.
RUN_FILES = ("last.pt", "best.pt", "metrics.csv")
GRAPH_FILES = ("train_loss.png", "train_acc.png", "val_loss.png", "val_acc.png", "lr.png")
EPOCH_FILES = "*-[0-9][0-9][0-9]-*.pt"  # <model>-<epoch:03d>-<val>.pt


def run_outputs(run_dir: Path) -> list[Path]:
    """The files of an earlier run in ``run_dir`` (empty when there is none)."""
    if not run_dir.is_dir():
        return []
    named = [run_dir / n for n in (*RUN_FILES, *GRAPH_FILES)]
    return [p for p in named if p.is_file()] + sorted(run_dir.glob(EPOCH_FILES))


def prepare_run_dir(run_dir: Path, resume: Path | None, overwrite: bool) -> None:
    """Refuse to replace an earlier run's checkpoints and metrics unless resuming it or
    ``overwrite`` (which deletes them, so metrics.csv does not mix two runs), and refuse a run
    folder that cannot be written, before any data is loaded."""
    check_outputs({"--out-dir/--run": run_dir / "last.pt"}, overwrite=True, make_folders=True)
    earlier = run_outputs(run_dir)
    if earlier and resume is None and not overwrite:
        last = run_dir / "last.pt"
        how = (f"continue it with --resume {last}, start it over with --overwrite" if last.is_file() else
               "it has no last.pt to resume (stopped before its first checkpoint): start it over with "
               "--overwrite")
        raise ValueError(
            f"{run_dir}: run '{run_dir.name}' already exists ({earlier[0].name}, ...); {how}, or pick "
            "another --run"
        )
    if overwrite and resume is None:
        for p in earlier:
            p.unlink(missing_ok=True)  # under torchrun every rank gets here
    stale = remove_stale_temps(run_dir)
    if stale:
        print(f"note: removed {len(stale)} temporary file(s) left by an interrupted run in {run_dir}",
              file=sys.stderr)
