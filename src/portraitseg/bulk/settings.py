"""What a bulk job computes (:class:`BulkSettings`) and with how much of the cluster
(:class:`Resources`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..defaults import MAX_PIXELS
from ..postprocess import Background, PostprocessConfig

# Share of the cluster's CPUs given to segmenting actors by default; the rest runs the encode and
# write tasks. Decoding is fused into the actors by Ray Data (a task stage feeding an actor stage
# runs in the actor), so an actor does decode + model + post-processing + rendering, and PNG/JPEG
# encoding is the other big cost (docs/scale.md has the per-stage numbers this comes from).
ACTOR_CPU_SHARE = 0.75
# Default batches: enough of them for every actor to stay busy (4 per actor), never above this
# many images (a killed actor's batch is redone, and progress moves in batch steps).
MAX_DEFAULT_BATCH = 16
BATCHES_PER_ACTOR = 4


@dataclass
class BulkSettings:
    """Everything that decides an image's outputs: the same choices as ``predict``'s flags.

    ``background`` is already parsed (:func:`~portraitseg.inference.parse_background`): "blur",
    an RGB tuple or an RGB array, so workers never need the background file itself.
    """

    model: str = "default"
    backend: str = "auto"
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    background: Background = "blur"
    max_pixels: int = MAX_PIXELS

    def for_workers(self) -> BulkSettings:
        """The same settings with the model pinned down on the driver: a model file as an
        absolute path (workers run in another folder), and ``backend="auto"`` resolved, so every
        node runs the backend the driver chose (a worker without it fails at start instead of
        silently using another backend, whose masks differ in the last bits)."""
        from ..runtimes import resolve_backend

        path = Path(self.model)
        model = str(path.resolve()) if self.model != "default" and path.is_file() else self.model
        backend = resolve_backend(self.backend) if self.model == "default" else self.backend
        return dataclasses.replace(self, model=model, backend=backend)


@dataclass
class Resources:
    """How much of the cluster a job uses; ``None`` = a default from the cluster's CPUs and the
    job's size (:meth:`resolve`)."""

    actors: int | None = None  # segmenting actors, each with its own copy of the model
    threads: int = 1  # model threads per actor: parallelism comes from the actors
    batch_size: int | None = None  # images per actor call

    def resolve(self, n_images: int | None, cluster_cpus: float, node_cpus: float | None = None) -> Resources:
        """Fill in the defaults (``n_images=None``: a dataset of unknown length). An actor asks
        Ray for ``threads`` CPUs on one node, and the read, encode and write tasks need one more
        somewhere: an actor larger than the largest node (``node_cpus``) never starts, and one
        holding every CPU starves the tasks; either way the job waited forever, printing nothing."""
        largest = cluster_cpus if node_cpus is None else min(node_cpus, cluster_cpus)
        if self.threads > largest or self.threads >= cluster_cpus:
            raise ValueError(f"--threads {self.threads}: each actor needs that many CPUs on one node and the "
                             f"other stages at least one more; the Ray cluster has {cluster_cpus:g} CPUs "
                             f"(the largest node {largest:g})")
        actors = self.actors or max(1, int(cluster_cpus * ACTOR_CPU_SHARE) // self.threads)
        batch = self.batch_size or MAX_DEFAULT_BATCH
        if self.batch_size is None and n_images is not None:
            batch = max(1, min(MAX_DEFAULT_BATCH, n_images // (BATCHES_PER_ACTOR * actors)))
        return Resources(actors=actors, threads=self.threads, batch_size=batch)
