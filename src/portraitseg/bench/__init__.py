"""Benchmarks, kept out of the inference modules: the per-stage frame pipeline
(:mod:`.frame`, ``portraitseg bench``), file -> file video (:mod:`.video`,
``portraitseg video --bench``), post-processing ops (:mod:`.postprocess`) and temporal
smoothing's flicker (:mod:`.temporal`); the last two run as ``python -m portraitseg.bench.<name>``.
"""

from __future__ import annotations

from .frame import (
    FORMATS,
    OPTION_CONFIGS,
    REFERENCE_PEER,
    STAGES,
    BenchReport,
    Builder,
    CaseResult,
    PipelineTimer,
    make_frame,
    markdown_table,
    options_table,
    run_bench,
)

__all__ = [
    "FORMATS", "OPTION_CONFIGS", "REFERENCE_PEER", "STAGES", "BenchReport", "Builder", "CaseResult",
    "PipelineTimer", "make_frame", "markdown_table", "options_table", "run_bench",
]
