"""What a video frame becomes: the model settings of a stream (:class:`ModelConfig` -> one
:class:`~portraitseg.pipeline.Pipeline`) and the effect rendered with its mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import postprocess as pp
from ..defaults import MAX_THREADS
from ..options import Bounds, option
from ..pipeline import Pipeline, StageTimes
from ..temporal import SmoothingConfig
from .io import VIDEO_EXTS, VideoBackground

Effect = pp.Background | VideoBackground | str  # str: "mask" or "none" besides "blur"


@dataclass
class ModelConfig:
    """The model side of a video run (the file and live pipelines share it)."""

    model: str = option("default", "'default' (bundled, fastest backend), a .pt/.onnx/.tflite file or a peer")
    # Bounded: --threads 100000 ended in "RuntimeError: can't start new thread" (a traceback).
    threads: int = option(1, "model threads; 1 leaves the other core to decoding/encoding", metavar="N",
                          bounds=Bounds(low=1, high=MAX_THREADS))
    smoothing: bool = option(True, "motion-aware temporal smoothing of the masks")
    postprocess: pp.PostprocessConfig = field(default_factory=pp.PostprocessConfig)

    def validate(self) -> None:
        if self.threads < 1:
            raise ValueError("--threads must be >= 1")


def open_pipeline(cfg: ModelConfig, times: StageTimes | None = None) -> Pipeline:
    """The stream's pipeline: model opened through :func:`~portraitseg.runtimes.open_model`."""
    from ..runtimes import open_model

    cfg.validate()
    smoothing = SmoothingConfig() if cfg.smoothing else None
    return Pipeline(open_model(cfg.model, threads=cfg.threads), cfg.postprocess, smoothing, times)


def parse_effect(background: str | None, mask_only: bool = False) -> Effect:
    """CLI ``--background`` / ``--mask-only`` -> an effect: an image, a colour, ``"blur"``, a
    :class:`VideoBackground`, ``"mask"`` or ``"none"``."""
    from ..inference import parse_background

    if mask_only:
        return "mask"
    if background is None:
        return "blur"
    if Path(background).suffix.lower() in VIDEO_EXTS:
        return VideoBackground(background)
    return parse_background(background)


def render_effect(pipe: Pipeline, frame: np.ndarray, alpha: np.ndarray, effect: Effect) -> np.ndarray:
    """RGB frame + alpha -> the output frame (RGB, or grey uint8 for ``"mask"``)."""
    if isinstance(effect, str) and effect in ("mask", "none"):
        return pipe.render(frame, alpha, effect)
    return pipe.render(frame, alpha, "composite", effect)


def prepare_effect(effect: Effect, size_hw: tuple[int, int]) -> Effect:
    """``effect`` for a stream of ``size_hw`` frames: a background image is scaled to cover the
    frame once here instead of once per frame (1-2 ms a frame for a photo of another size)."""
    if isinstance(effect, np.ndarray) and effect.ndim == 3:
        return np.ascontiguousarray(pp.fit_background(effect, size_hw))
    return effect
