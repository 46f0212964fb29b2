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
from typing import Protocol, runtime_checkable

import numpy as np

from . import postprocess as pp
from .runtimes import Runtime, output_to_prob
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
    """Seconds accumulated per stage (thread-safe enough: each stage is written by one thread)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)

    def add(self, stage: str, seconds: float) -> None:
        self.total[stage] += seconds
        self.count[stage] += 1

    def ms(self) -> dict[str, float]:
        return {k: round(1000 * v / max(self.count[k], 1), 2) for k, v in self.total.items()}


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
        t0 = time.perf_counter()
        prob = self.model_prob(image)
        t1 = time.perf_counter()
        self.times.add("model", t1 - t0)
        if self.smoothing and self.smoother is not None:
            prob = self.smoother.update(prob, lowres_gray(image, prob.shape)).copy()
            self.times.add("smooth", time.perf_counter() - t1)
        return prob

    def alpha(self, prob: np.ndarray | None, image: np.ndarray) -> np.ndarray:
        """Full-resolution alpha (workspace-owned); ``None`` -> all background."""
        t0 = time.perf_counter()
        if prob is None:
            alpha = self.postprocessor.ws.get("alpha.none", image.shape[:2])
            alpha[:] = 0.0
        else:
            alpha = self.postprocessor(prob, image)
        self.times.add("post", time.perf_counter() - t0)
        return alpha

    def render(self, image: np.ndarray, alpha: np.ndarray, kind: str = "composite",
               background: Background = "blur") -> np.ndarray:
        """RGB image + alpha -> ``kind``: ``mask`` (uint8 gray), ``cutout`` (RGBA), ``composite``
        (RGB over ``background``: image, colour, ``"blur"`` or a :class:`BackgroundSource`) or
        ``none`` (the image)."""
        t0 = time.perf_counter()
        if kind == "mask":
            out = pp.to_u8(alpha)
        elif kind == "cutout":
            out = pp.cutout(image, alpha)
        elif kind == "composite":
            bg = background.next() if isinstance(background, BackgroundSource) else background
            out = self.postprocessor.composite(image, alpha, bg)
        elif kind == "none":
            out = image
        else:
            raise ValueError(f"render kind must be one of {', '.join(RENDER_KINDS)}; got {kind!r}")
        self.times.add("composite", time.perf_counter() - t0)
        return out

    def __call__(self, image: np.ndarray, kind: str = "mask", background: Background = "blur") -> np.ndarray:
        """All stages for one RGB uint8 image (workspace-owned result where ``render`` says so)."""
        return self.render(image, self.alpha(self.lowres(image), image), kind, background)

    def __repr__(self) -> str:
        return f"Pipeline({self.runtime!r}, {self.config}, smoothing={self.smoothing})"
