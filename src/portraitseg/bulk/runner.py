"""The Ray Data pipeline of a bulk job and its two entry points: :func:`segment` (a dataset in,
a lazy dataset of results out) and :func:`run` (files in, files out: ``portraitseg bulk``).

Pipeline: rows -> decode (tasks) -> segment + render (a pool of :class:`~.stages.SegmentActor`,
each holding one model) -> encode (tasks) -> write (tasks) -> one status row per image, which the
driver counts, prints and journals as they stream in. Ray Data fuses neighbouring stages where it
can (decode into the actors, write into encode), so the data crosses processes twice per image.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..commands.predict import Summary
from ..data.io import one_line
from ..locate import install_hint
from ..outfiles import OutOfSpace
from .settings import BulkSettings, Resources
from .stages import SegmentActor, check_batch, decode_batch, encode_batch, write_batch

if TYPE_CHECKING:
    import ray.data

KINDS = ("mask", "cutout", "composite", "grid")


def import_ray() -> Any:
    """``ray`` with its Data library, or a one-line error naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: pyarrow, pandas...)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"{exc.name} is not installed; bulk inference needs the 'ray' extra: "
                                  f"{install_hint('ray')}", name=exc.name) from None
    return ray


def connect(address: str | None = None) -> None:
    """Join the Ray cluster at ``address`` ("auto", "HOST:6379", "ray://HOST:10001"), or without
    one start a local instance on this machine (or join ``$RAY_ADDRESS`` when set). A session
    that already called ``ray.init`` keeps its cluster."""
    ray = import_ray()
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    else:
        # No dashboard: a batch job does not need one and it costs seconds of start-up.
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")


def cluster_cpus() -> float:
    return float(import_ray().cluster_resources().get("CPU", 1.0))


def largest_node_cpus() -> float | None:
    """The CPUs of the cluster's largest live node (None when Ray does not say)."""
    cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in import_ray().nodes() if n.get("Alive")]
    return max(cpus) if cpus else None


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"output kinds must be among {', '.join(KINDS)}; got {list(kinds)}")
    return tuple(dict.fromkeys(kinds))


def suffixes_for(kinds: tuple[str, ...], composite_format: str = "jpg") -> dict[str, str]:
    """kind -> file suffix, from predict's naming (``x.mask.png``, ``x.composite.jpg``...)."""
    from ..commands.predict import Job, output_paths

    named = output_paths(Job(Path("x"), Path()), Path(), list(kinds), composite_format)
    return {k: p.suffix for k, p in named.items()}


def pipeline(ds: ray.data.Dataset, kinds: tuple[str, ...], settings: BulkSettings, res: Resources,
             suffixes: dict[str, str] | None) -> ray.data.Dataset:
    """decode -> segment (actor pool) [-> encode]: the stages every bulk job shares."""
    ray = import_ray()
    pinned = settings.for_workers()
    batch = {"batch_size": res.batch_size, "batch_format": "numpy"}
    ds = ds.map_batches(decode_batch, fn_kwargs={"max_pixels": pinned.max_pixels}, **batch)
    ds = ds.map_batches(
        SegmentActor,
        fn_constructor_kwargs={"settings": pinned, "kinds": kinds, "threads": res.threads},
        compute=ray.data.ActorPoolStrategy(size=res.actors),
        num_cpus=res.threads,
        **batch,
    )
    if suffixes is not None:
        ds = ds.map_batches(encode_batch, fn_kwargs={"suffixes": suffixes}, **batch)
    return ds


def segment(
    data: ray.data.Dataset | Sequence[str | Path],
    kinds: Sequence[str] = ("mask",),
    settings: BulkSettings | None = None,
    resources: Resources | None = None,
    encoded: bool = False,
    composite_format: str = "jpg",
) -> ray.data.Dataset:
    """Segment every image of ``data`` on the Ray cluster; returns a lazy Ray Dataset.

    ``data``: image file paths (read where each task runs: a folder every node sees), or a Ray
    Dataset with an ``image`` column (decoded arrays, e.g. ``ray.data.read_images``, which does
    not apply EXIF orientation) or a ``bytes`` column (encoded files, e.g.
    ``ray.data.read_binary_files("s3://bucket/photos", include_paths=True)``: decoded like
    ``predict`` decodes files). Its other columns are kept; ``path`` names rows in errors.

    The result has, per requested kind, a column of uint8 arrays (``mask``: HxW matte,
    ``cutout``: RGBA, ``composite``/``grid``: RGB) or, with ``encoded=True``, of the PNG/JPEG
    bytes ``predict`` would write; plus ``error`` ('' or 'path: problem': such rows hold empty
    arrays) and ``worker`` (host:pid of the actor). Write it with any Ray Dataset writer.
    """
    ray = import_ray()
    kinds = check_kinds(kinds)
    settings = settings or BulkSettings()
    if isinstance(data, ray.data.Dataset):
        ds, n_images = data, None
    else:
        rows = [{"path": str(p), "src": str(Path(p).resolve())} for p in data]
        if not rows:
            raise ValueError("no input images given")
        ds, n_images = None, len(rows)
    connect()
    res = (resources or Resources()).resolve(n_images, cluster_cpus(), largest_node_cpus())
    if ds is None:
        ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // res.batch_size))
    return pipeline(ds, kinds, settings, res, suffixes_for(kinds, composite_format) if encoded else None)


# --------------------------------------------------------------------------- file jobs


@dataclass
class FileJob:
    """``portraitseg bulk``'s inputs and output rules (the same as ``predict``'s)."""

    inputs: list[str]
    outdir: Path
    kinds: tuple[str, ...] = ("mask",)
    composite_format: str = "jpg"
    overwrite: bool = False
    progress: bool = True


@dataclass
class BulkSummary(Summary):
    """predict's counts (``done`` includes ``skipped``: images an earlier run finished), plus
    ``total`` images planned, the pipeline's ``seconds``, the error lines and images per
    segmenting actor (host:pid)."""

    total: int = 0
    missing: int = 0  # inputs that named no file (in ``failed``, not in ``total``)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    workers: Counter[str] = field(default_factory=Counter)

    @property
    def reached(self) -> int:
        """Images of ``total`` finished so far (done, skipped or failed)."""
        return self.done + self.failed - self.missing

    def rate_line(self) -> str:
        computed = sum(self.workers.values())
        rate = computed / self.seconds if self.seconds > 0 else 0.0
        return (f"{computed} image(s) segmented in {self.seconds:.1f} s ({rate:.2f} images/s, Ray start-up "
                f"included) by {len(self.workers)} actor process(es)")


def run(job: FileJob, settings: BulkSettings, resources: Resources | None = None,
        address: str | None = None, summary: BulkSummary | None = None) -> BulkSummary:
    """Segment files into files on a Ray cluster with predict's names, rules and record;
    prints each bad file as 'path: problem' and shows progress. ``summary`` (filled in as
    the job goes) lets a caller report how far an interrupted job got."""
    from ..commands.predict import gather_jobs, output_recipes
    from ..commands.predict_record import Record
    from ..inference import Segmenter
    from .plan import plan_jobs

    summary = summary if summary is not None else BulkSummary()
    kinds = check_kinds(job.kinds)
    jobs, errors = gather_jobs(job.inputs, job.outdir)
    # The model opens here first: a bad --model or backend is one line now, not a failure on
    # every worker after the cluster started; it also gives predict's recipes (the record's
    # key for "same model and options"), computed once for all workers.
    pinned = settings.for_workers()
    segmenter = Segmenter(pinned.model, backend=pinned.backend, postprocess=pinned.postprocess, threads=1)
    background = pinned.background if "composite" in kinds else None  # as predict passes it
    recipes = output_recipes(list(kinds), segmenter, pinned.postprocess, background)
    plan = plan_jobs(jobs, job.outdir, kinds, job.composite_format,
                     None if job.overwrite else Record.load(job.outdir))
    summary.failed += len(errors) + len(plan.failed)
    summary.errors += errors + plan.failed
    summary.total, summary.missing = len(jobs), len(errors)
    for line in plan.failed:
        print(one_line(line), file=sys.stderr)
    if plan.rows:
        _execute(plan.rows, job, kinds, recipes, settings, resources or Resources(), address, summary)
    return summary


@contextmanager
def own_progress() -> Iterator[None]:
    """Ray Data's progress bars and INFO lines off while a file job shows its own progress
    (restored afterwards: a Python caller's settings are theirs)."""
    ray = import_ray()
    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = (ctx.enable_progress_bars, ctx.print_on_execution_start, logger.level)
    ctx.enable_progress_bars = ctx.print_on_execution_start = False
    logger.setLevel(logging.ERROR)  # also "progress bars disabled, to enable..." (a WARNING)
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved[:2]
        logger.setLevel(saved[2])


def _execute(rows: list[dict[str, Any]], job: FileJob, kinds: tuple[str, ...], recipes: dict[str, str],
             settings: BulkSettings, resources: Resources, address: str | None, summary: BulkSummary) -> None:
    from tqdm import tqdm

    ray = import_ray()
    start = time.perf_counter()
    connect(address)
    res = resources.resolve(len(rows), cluster_cpus(), largest_node_cpus())
    outdir = str(job.outdir.resolve())
    # One block per batch: the first batches start as soon as the actors are up.
    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows) // res.batch_size))
    ds = ds.map_batches(check_batch, fn_kwargs={"outdir": outdir, "recipes": recipes},
                        batch_size=res.batch_size, batch_format="numpy")
    ds = pipeline(ds, kinds, settings, res, suffixes_for(kinds, job.composite_format))
    write_args = {"outdir": outdir, "recipes": recipes, "overwrite": job.overwrite}
    ds = ds.map_batches(write_batch, fn_kwargs=write_args, batch_size=res.batch_size, batch_format="numpy")
    bar = tqdm(total=len(rows), desc="bulk", unit="img", disable=True if not job.progress else None)
    try:
        with own_progress():
            for status in ds.iter_batches(batch_size=None, batch_format="numpy"):
                _count(status, summary, bar)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start


def _count(status: dict[str, Any], summary: BulkSummary, bar: Any) -> None:
    from tqdm import tqdm

    columns = ("error", "skipped", "written", "unchanged", "full", "worker")
    for error, skipped, written, unchanged, full, worker in zip(*(status[c] for c in columns)):
        if error:
            summary.failed += 1
            summary.errors.append(str(error))
            tqdm.write(one_line(str(error)), file=sys.stderr)
            if full:  # every next image would fail the same way, one line each: as predict, stop
                summary.written += int(written)
                raise OutOfSpace(str(error))
        else:
            summary.done += 1
            if skipped:
                summary.skipped += 1
            else:
                summary.workers[str(worker)] += 1
        summary.written += int(written)
        summary.unchanged += int(unchanged)
        bar.update(1)
    bar.set_postfix(failed=summary.failed, skipped=summary.skipped, refresh=False)


__all__ = ["BulkSettings", "BulkSummary", "FileJob", "Resources", "connect", "run", "segment"]
