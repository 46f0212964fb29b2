"""Video: file -> file processing (:mod:`.file`) and the live pipeline (:mod:`.live`), both
running frames through one :class:`~portraitseg.pipeline.Pipeline` (:mod:`.effects`), with
capture/codec/audio helpers in :mod:`.io` and the output writers (H.264 through ffmpeg, OpenCV
as the fallback) in :mod:`.writer`."""

from __future__ import annotations

from .effects import Effect, ModelConfig, open_pipeline, parse_effect, render_effect
from .file import VideoConfig, VideoResult, process_file
from .io import (
    CODECS,
    VIDEO_EXTS,
    FrameSource,
    VideoBackground,
    codec_for,
    copy_audio,
    open_source,
    open_video,
)
from .live import DEFAULT_MAX_MASK_AGE, FrameInfo, LiveConfig, LivePipeline, LiveStats, draw_overlay
from .writer import FrameWriter, open_writer

__all__ = [
    "CODECS", "DEFAULT_MAX_MASK_AGE", "VIDEO_EXTS", "Effect", "FrameInfo", "FrameSource", "FrameWriter",
    "LiveConfig",
    "LivePipeline", "LiveStats", "ModelConfig", "VideoBackground", "VideoConfig", "VideoResult", "codec_for",
    "copy_audio", "draw_overlay", "open_pipeline", "open_source", "open_video", "open_writer", "parse_effect",
    "process_file", "render_effect",
]
