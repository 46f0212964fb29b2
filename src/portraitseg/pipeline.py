"""The one segmentation pipeline: runtime -> probability -> optional temporal smoothing ->
post-processing -> render (mask / cut-out / composite).

``predict`` (through :class:`~portraitseg.inference.Segmenter`), ``serve``, ``video``,
``webcam`` and ``bench`` all run frames through a :class:`Pipeline`, so each stage exists
once. The stages are separate methods because the live pipeline runs the model and the
rendering in different threads, and ``bench`` times each one on its own.

Smoothing runs on the low-resolution probability (before post-processing), where it costs
~0.2 ms (see :mod:`portraitseg.temporal`). Arrays returned by :meth:`Pipeline.alpha` and
:meth:`Pipeline.render` live in the pipeline's workspace and are overwritten by the next call:
copy what you keep. A pipeline is not thread-safe: use one per thread (they may share a
thread-safe runtime, see :meth:`~portraitseg.runtimes.Runtime.for_thread`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import numpy as np

from . import postprocess as pp
from .runtimes import Runtime, check_image, output_to_prob, resize_image
from .temporal import SmoothingConfig, TemporalSmoother, lowres_gray

# What a pipeline can render: the 8-bit matte, RGBA, the person over a background, or the
# frame untouched ("none": the webcam's effect cycle).
RENDER_KINDS = ("mask", "cutout", "composite", "none")


@runtime_checkable
class BackgroundSource(Protocol):
    """A background that changes per frame (e.g. a looping video): ``next()`` -> RGB frame."""

    def next(self) -> np.ndarray: ...


Background = pp.Background | BackgroundSource


class StageTimes:
    """Per stage: wall seconds and the calling thread's CPU seconds, accumulated (thread-safe
    enough: each stage is written by one thread). In a pipeline whose stages overlap on fewer
    cores than threads, wall time includes waiting for a core; CPU time is what the stage
    costs, so their sum over the stages says how many frames/s the cores can give."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float, cpu_seconds: float | None = None) -> None:
        self.total[stage] += seconds
        if cpu_seconds is not None:
            self.cpu[stage] += cpu_seconds
        self.count[stage] += 1

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (wall and this thread's CPU)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0, time.thread_time() - c0)

    def ms(self) -> dict[str, float]:
        """Mean wall ms per call of each stage."""
        return {k: round(1000 * v / max(self.count[k], 1), 2) for k, v in self.total.items()}

    def cpu_ms(self) -> dict[str, float]:
        """Mean CPU ms per call of each stage timed with :meth:`measure`."""
        return {k: round(1000 * v / max(self.count[k], 1), 2) for k, v in self.cpu.items()}


class Pipeline:
    """One runtime's frames -> alpha -> output, with per-stage timing (see the module docstring).

    ``smoothing=None`` leaves temporal smoothing off (single images); a
    :class:`~portraitseg.temporal.SmoothingConfig` turns it on (video streams).
    """

    def __init__(
        self,
        runtime: Runtime,
        postprocess: pp.PostprocessConfig | None = None,
        smoothing: SmoothingConfig | None = None,
        times: StageTimes | None = None,
    ) -> None:
        self.runtime = runtime
        self.postprocessor = pp.Postprocessor(postprocess)
        self.smoother = TemporalSmoother(smoothing) if smoothing is not None else None
        self.smoothing = smoothing is not None
        self.times = times or StageTimes()

    @property
    def config(self) -> pp.PostprocessConfig:
        return self.postprocessor.cfg

    def set_smoothing(self, on: bool) -> None:
        """Switch smoothing on/off mid-stream (history is dropped on a change)."""
        if on and self.smoother is None:
            self.smoother = TemporalSmoother()
        if on != self.smoothing and self.smoother is not None:
            self.smoother.reset()
        self.smoothing = on

    # -- stages
    def model_prob(self, image: np.ndarray) -> np.ndarray:
        """The model's person probability at its own resolution (no smoothing)."""
        rt = self.runtime
        return output_to_prob(rt.infer(rt.preprocess(image)), rt.output_format, rt.input_size)

    def lowres(self, image: np.ndarray) -> np.ndarray:
        """:meth:`model_prob`, then temporal smoothing when on (a copy: safe to hand over)."""
        with self.times.measure("model"):
            check_image(image)
            # The model's input picture, made once: smoothing measures motion on the same small
            # frame the model saw instead of shrinking the full frame again (2.6 ms at 720p).
            small = resize_image(image, self.runtime.input_size)
            prob = self.model_prob(small)
        if self.smoothing and self.smoother is not None:
            with self.times.measure("smooth"):
                prob = self.smoother.update(prob, lowres_gray(small, prob.shape)).copy()
        return prob

    def alpha(self, prob: np.ndarray | None, image: np.ndarray) -> np.ndarray:
        """Full-resolution alpha (workspace-owned); ``None`` -> all background."""
        with self.times.measure("post"):
            if prob is None:
                alpha = self.postprocessor.ws.get("alpha.none", image.shape[:2])
                alpha[:] = 0.0
            else:
                alpha = self.postprocessor(prob, image)
        return alpha

    def render(self, image: np.ndarray, alpha: np.ndarray, kind: str = "composite",
               background: Background = "blur") -> np.ndarray:
        """RGB image + alpha -> ``kind``: ``mask`` (uint8 gray), ``cutout`` (RGBA), ``composite``
        (RGB over ``background``: image, colour, ``"blur"`` or a :class:`BackgroundSource`) or
        ``none`` (the image)."""
        with self.times.measure("composite"):
            return self._render(image, alpha, kind, background)

    def _render(self, image: np.ndarray, alpha: np.ndarray, kind: str, background: Background) -> np.ndarray:
        if kind == "mask":
            return pp.to_u8(alpha)
        if kind == "cutout":
            return pp.cutout(image, alpha)
        if kind == "composite":
            bg = background.next() if isinstance(background, BackgroundSource) else background
            return self.postprocessor.composite(image, alpha, bg)
        if kind == "none":
            return image
        raise ValueError(f"render kind must be one of {', '.join(RENDER_KINDS)}; got {kind!r}")

    def __call__(self, image: np.ndarray, kind: str = "mask", background: Background = "blur") -> np.ndarray:
        """All stages for one RGB uint8 image (workspace-owned result where ``render`` says so)."""
        return self.render(image, self.alpha(self.lowres(image), image), kind, background)

    def __repr__(self) -> str:
        return f"Pipeline({self.runtime!r}, {self.config}, smoothing={self.smoothing})"
