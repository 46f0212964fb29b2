"""images/s of ``portraitseg predict`` (one process) vs ``portraitseg bulk`` (Ray Data) on this
machine, and where a bulk job's time goes (the stages timed on their own, without Ray).

    nice -n 15 python scripts/bench_bulk.py --images ../shared/data/vikram_val/images --n 96

Real photos: the first ``--n`` images of ``--images`` (default: ../shared/data/vikram_val/images,
else the bundled samples, repeated to ``--n``), copied into a temporary folder. Each run writes
``--output`` into its own empty folder. predict runs in this process at ``--threads 1`` and at
its default (all cores); bulk starts a local Ray instance on all CPUs (timed apart: start-up is
paid once per job, not per image) and then runs the job with its default actors/batches (or
``--actors``/``--batch-size``). A timing, not a test: numbers depend on the machine and on what
else runs on it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from portraitseg.bulk import BulkSettings, FileJob, Resources, connect, run
from portraitseg.bulk.runner import cluster_cpus, suffixes_for
from portraitseg.bulk.stages import SegmentActor, check_batch, decode_batch, encode_batch, write_batch
from portraitseg.cli import main

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "vikram_val" / "images"


def gather(source: Path, n: int, dest: Path) -> list[Path]:
    found = sorted(p for p in source.glob("*.jpg")) if source.is_dir() else []
    if not found:
        found = sorted((REPO / "src" / "portraitseg" / "assets").glob("*.jpg"))
        print(f"note: no images in {source}; using the bundled samples")
    dest.mkdir(parents=True)
    return [Path(shutil.copy2(found[i % len(found)], dest / f"{i:04d}-{found[i % len(found)].name}"))
            for i in range(n)]


def stage_split(photos: list[Path], kinds: tuple[str, ...], work: Path) -> tuple[float, float]:
    """ms per image of what an actor runs (check + decode + segment + render) and of what the
    encode/write tasks run, one image at a time in this process."""
    recipes = {k: "bench" for k in kinds}
    suffixes = suffixes_for(kinds)
    actor = SegmentActor(BulkSettings().for_workers(), kinds, threads=1)
    actor_ms, task_ms = [], []
    for i, path in enumerate(photos):
        row = {"idx": np.array([i]), "path": np.array([str(path)], dtype=object),
               "src": np.array([str(path)], dtype=object), "record": np.array([""], dtype=object)}
        for k in kinds:
            row[f"out_{k}"] = np.array([str(work / f"{path.stem}.{k}{suffixes[k]}")], dtype=object)
        t0 = time.perf_counter()
        batch = actor(decode_batch(check_batch(row, str(work), recipes), 10**9))
        t1 = time.perf_counter()
        write_batch(encode_batch(batch, suffixes), str(work), recipes, overwrite=True)
        t2 = time.perf_counter()
        actor_ms.append(1000 * (t1 - t0))
        task_ms.append(1000 * (t2 - t1))
    return statistics.median(actor_ms), statistics.median(task_ms)


def timed_predict(folder: Path, out: Path, kinds: tuple[str, ...], threads: int | None) -> float:
    args = ["predict", str(folder), "-o", str(out), "--no-progress"]
    args += ["--threads", str(threads)] if threads else []
    for kind in kinds:
        args += ["--output", kind]
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(args) == 0
    return time.perf_counter() - t0


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of real .jpg photos")
    parser.add_argument("--n", type=int, default=96, help="images per run (default: %(default)s)")
    parser.add_argument("--output", action="append", choices=("mask", "cutout", "composite", "grid"),
                        help="what to write (repeatable; default: mask)")
    parser.add_argument("--actors", type=int, default=None, help="bulk actors (default: bulk's)")
    parser.add_argument("--batch-size", type=int, default=None, help="bulk batch size (default: bulk's)")
    args = parser.parse_args()
    kinds = tuple(args.output or ["mask"])
    with tempfile.TemporaryDirectory(prefix="bench_bulk_") as tmp:
        work = Path(tmp)
        photos = gather(args.images, args.n, work / "in")
        sizes = [os.path.getsize(p) for p in photos]
        print(f"{len(photos)} photos from {args.images} ({statistics.median(sizes) / 1e3:.0f} kB median), "
              f"outputs: {', '.join(kinds)}; {os.cpu_count()} CPUs")
        actor_ms, task_ms = stage_split(photos[:24], kinds, work / "split")
        share = actor_ms / (actor_ms + task_ms)
        print(f"stages per image, 1 thread: actor (check+decode+segment+render) {actor_ms:.1f} ms, "
              f"tasks (encode+write+record) {task_ms:.1f} ms -> actors' share of the work {share:.2f}")
        for threads in (1, None):
            secs = timed_predict(work / "in", work / f"predict-{threads}", kinds, threads)
            label = threads or "default"
            print(f"predict --threads {label}: {len(photos) / secs:.1f} images/s ({secs:.1f} s)")
        t0 = time.perf_counter()
        connect()
        started = time.perf_counter() - t0
        res = Resources(actors=args.actors, batch_size=args.batch_size).resolve(len(photos), cluster_cpus())
        t1 = time.perf_counter()
        summary = run(FileJob([str(work / "in")], work / "bulk", kinds, progress=False), BulkSettings(), res)
        secs = time.perf_counter() - t1
        assert summary.failed == 0 and summary.done == len(photos), summary
        print(f"bulk ({res.actors} actor(s) x {res.threads} thread, batch {res.batch_size}, "
              f"{cluster_cpus():.0f} CPUs): {len(photos) / secs:.1f} images/s ({secs:.1f} s, actor start "
              f"included); Ray start-up {started:.1f} s more")


if __name__ == "__main__":
    main_()
