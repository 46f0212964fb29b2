"""``portraitseg bench``: end-to-end latency of the video-frame pipeline, per stage, for our
model and the peers.

One 1280x720 frame (by default the bundled astronaut sample, scaled to 720 px high and padded
to 16:9) goes through one :class:`~portraitseg.pipeline.Pipeline` per model: decode
(``cv2.imdecode`` of its JPEG bytes) -> preprocess (resize + normalise to the model input) ->
model call -> post-process (low-res probability -> full-res alpha, default config) ->
composite (blurred background). Each stage is timed on its own (median of ``repeats`` after a
warm-up); ``total`` is the whole chain timed as one call, so it includes what the stages share.
Every model gets the same decode/pre/post/composite code, so the peers are compared on equal
terms.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .. import postprocess as pp
from ..data.io import encode_image
from ..inference import load_image
from ..locate import install_hint
from ..pipeline import Pipeline
from ..runtimes import DEFAULT_TFLITE, Runtime, TFLiteRuntime, open_model, output_to_prob

FRAME_SIZE = (720, 1280)  # (height, width)
SAMPLE = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"
FORMATS = ("torch", "onnx", "onnx-fp16", "onnx-int8", "tflite")
REFERENCE_PEER = "mediapipe_selfie_256"
STAGES = ("decode", "preprocess", "model", "postprocess", "composite")
COMPOSITE_BACKGROUND = "blur"  # the video-call case; colour/image cost about the same (postprocess.md)
# Each post-processing option alone, on bilinear upsampling, plus the default config. The base
# names every step explicitly so the rows stay "one option" whatever the defaults become.
_BASE = pp.PostprocessConfig(
    guided=False, keep_largest=False, open_size=0, close_size=0, blur_size=0, smoothstep=None
)
OPTION_CONFIGS: dict[str, pp.PostprocessConfig] = {
    "bilinear only": _BASE,
    "guided upsample": replace(_BASE, guided=True),
    "keep-largest": replace(_BASE, keep_largest=True),
    "open 5": replace(_BASE, open_size=5),
    "close 5": replace(_BASE, close_size=5),
    "blur 9": replace(_BASE, blur_size=9),
    "smoothstep 0.3-0.7": replace(_BASE, smoothstep=(0.3, 0.7)),
    "default config": pp.PostprocessConfig(),
}


@dataclass
class CaseResult:
    """Median milliseconds per stage for one model/format/threads."""

    model: str
    format: str
    threads: int
    stage_ms: dict[str, float]
    total_ms: float  # median of the whole chain timed as one call
    total_min_ms: float  # its fastest run: the least load-disturbed estimate on a shared machine

    @property
    def key(self) -> str:
        return f"{self.model}/{self.format}/{self.threads}"

    @property
    def fps(self) -> float:
        return 1000.0 / self.total_ms

    def as_dict(self) -> dict[str, float]:
        stages = {f"{k}_ms": v for k, v in self.stage_ms.items()}
        return {**stages, "total_ms": self.total_ms, "total_min_ms": self.total_min_ms, "fps": self.fps}


@dataclass
class BenchReport:
    cases: list[CaseResult] = field(default_factory=list)
    options_ms: dict[int, dict[str, float]] = field(default_factory=dict)  # threads -> option -> ms
    notes: list[str] = field(default_factory=list)
    frame: str = ""

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {c.key: c.as_dict() for c in self.cases}
        out["_postprocess_options_ms"] = {str(t): v for t, v in self.options_ms.items()}
        out["_notes"] = self.notes
        out["_frame"] = self.frame
        return out


# --------------------------------------------------------------------------- inputs


def make_frame(path: str | Path | None = None, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """An RGB uint8 frame of ``size``: the image scaled to fit and padded (edge colour) to it."""
    image = load_image(path or SAMPLE)
    h, w = size
    s = min(h / image.shape[0], w / image.shape[1])
    nh, nw = round(image.shape[0] * s), round(image.shape[1] * s)
    scaled = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    top, left = (h - nh) // 2, (w - nw) // 2
    return cv2.copyMakeBorder(scaled, top, h - nh - top, left, w - nw - left, cv2.BORDER_REPLICATE)


def decode(jpeg: np.ndarray) -> np.ndarray:
    """JPEG bytes -> RGB; straight to RGB where OpenCV can (>= 4.11), saving a swap pass."""
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)
    if rgb_flag is not None:
        return cv2.imdecode(jpeg, rgb_flag)
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------- timing


def sample_ms(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(sample_ms(fn, repeats))


@contextmanager
def thread_count(threads: int) -> Iterator[None]:
    """OpenCV (and torch, if loaded) at ``threads`` for the block; ORT/TFLite get theirs at
    session creation."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    torch = _loaded_torch()
    torch_prev = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
        if torch and torch_prev:
            torch.set_num_threads(torch_prev)


def _loaded_torch():
    import sys

    return sys.modules.get("torch")


class PipelineTimer:
    """Times one runtime's :class:`~portraitseg.pipeline.Pipeline` stage by stage and as a
    whole; samples accumulate over several rounds so that every case sees the same stretch of
    (shared-machine) load."""

    def __init__(self, runtime: Runtime, jpeg: np.ndarray, cfg: pp.PostprocessConfig | None = None) -> None:
        self.pipe, self.jpeg = Pipeline(runtime, cfg), jpeg
        self.frame = decode(jpeg)
        self.tensor = runtime.preprocess(self.frame)
        self.raw = runtime.infer(self.tensor)
        self.alpha = self._postprocess().copy()
        self.samples: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
        self.run_round(2)  # warm-up: OpenCV dispatch, workspace buffers, backend first-call costs
        self.samples = {s: [] for s in (*STAGES, "total")}

    @property
    def runtime(self) -> Runtime:
        return self.pipe.runtime

    def _postprocess(self) -> np.ndarray:
        rt = self.runtime
        return self.pipe.alpha(output_to_prob(self.raw, rt.output_format, rt.input_size), self.frame)

    def _chain(self) -> np.ndarray:
        return self.pipe(decode(self.jpeg), "composite", COMPOSITE_BACKGROUND)

    def run_round(self, n: int) -> None:
        rt, pipe = self.runtime, self.pipe
        fns: dict[str, Callable[[], object]] = {
            "decode": lambda: decode(self.jpeg),
            "preprocess": lambda: rt.preprocess(self.frame),
            "model": lambda: rt.infer(self.tensor),
            "postprocess": self._postprocess,
            "composite": lambda: pipe.render(self.frame, self.alpha, "composite", COMPOSITE_BACKGROUND),
            "total": self._chain,
        }
        for name, fn in fns.items():
            self.samples[name] += sample_ms(fn, n)

    def result(self, model: str, fmt: str, threads: int) -> CaseResult:
        med = {s: statistics.median(self.samples[s]) for s in STAGES}
        total = self.samples["total"]
        return CaseResult(model, fmt, threads, med, statistics.median(total), min(total))


def time_options(runtime: Runtime, frame: np.ndarray, repeats: int) -> dict[str, float]:
    prob = Pipeline(runtime).model_prob(frame)
    out = {}
    for name, cfg in OPTION_CONFIGS.items():
        pipe = Pipeline(runtime, cfg)
        out[name] = median_ms(lambda p=pipe: p.alpha(prob, frame), repeats)
    return out


# --------------------------------------------------------------------------- model builds


@dataclass
class Builder:
    """Turns (model spec, format) into runtimes, exporting ONNX/TFLite variants into a temp dir once."""

    workdir: Path
    calib_data: str | None = None
    notes: list[str] = field(default_factory=list)
    _files: dict[tuple[str, str], Path | None] = field(default_factory=dict)

    def unavailable(self, model: str, fmt: str) -> str | None:
        if fmt == "onnx-int8" and not self.calib_data:
            return f"{model}/onnx-int8 skipped: int8 needs calibration photos (--calib-data DIR)"
        if fmt == "tflite" and model == "default" and DEFAULT_TFLITE.is_file():
            if not importlib.util.find_spec("ai_edge_litert"):
                hint = install_hint("tflite")
                return f"{model}/tflite unavailable: the LiteRT runtime is not installed ({hint})"
            return None
        if fmt == "tflite" and not importlib.util.find_spec("litert_torch"):
            return (
                f"{model}/tflite unavailable: the PyTorch->LiteRT converter (litert-torch) is not installed "
                f"({install_hint('tflite-export')})"
            )
        return None

    def _export(self, model: str, fmt: str) -> Path:
        from ..checkpoint import load_model
        from ..export import ExportConfig, export_model

        key = (model, fmt)
        if key not in self._files:
            base, _, precision = fmt.partition("-")
            cfg = ExportConfig(
                format=base,
                precision=precision or "fp32",
                calib_data=self.calib_data if precision == "int8" else None,
            )
            path = self.workdir / f"{Path(model).stem}-{fmt}{'.tflite' if base == 'tflite' else '.onnx'}"
            export_model(load_model(model), path, cfg)
            self._files[key] = path
        return self._files[key]  # type: ignore[return-value]

    def runtime(self, model: str, fmt: str, threads: int) -> Runtime:
        if fmt == "torch":
            return open_model(model, "torch", threads, name=model)
        if model == "default" and (fmt == "onnx" or (fmt == "tflite" and DEFAULT_TFLITE.is_file())):
            return open_model("default", fmt, threads)  # the shipped file
        return open_model(self._export(model, fmt), threads=threads, name=model)


# --------------------------------------------------------------------------- driver


def run_bench(
    models: list[str],
    formats: list[str],
    peers: list[str],
    threads: list[int],
    image: str | Path | None = None,
    repeats: int = 30,
    calib_data: str | None = None,
    progress: Callable[[str], None] | None = None,
    rounds: int = 5,
) -> BenchReport:
    """Time every (model, format) and peer at each thread count. Per thread count, the cases
    are interleaved: ``rounds`` passes over all of them, each taking ~repeats/rounds samples."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if repeats < 1 or rounds < 1 or not threads or min(threads) < 1:
        raise ValueError("--repeats, --rounds and --threads must be >= 1")
    frame = make_frame(image)
    jpeg = np.frombuffer(encode_image(frame, ".jpg", quality=90), np.uint8)
    report = BenchReport(frame=f"{Path(image or SAMPLE).name} -> {frame.shape[1]}x{frame.shape[0]} JPEG q90")
    rounds = min(rounds, repeats)
    per_round = [repeats // rounds + (i < repeats % rounds) for i in range(rounds)]
    with tempfile.TemporaryDirectory(prefix="portraitseg-bench-") as tmp:
        builder = Builder(Path(tmp), calib_data)
        for t in threads:
            with thread_count(t):
                cases = _open_cases(builder, models, formats, peers, t, report)
                timers = [(label, PipelineTimer(rt, jpeg)) for label, rt in cases]
                for n in per_round:
                    for _, timer in timers:
                        timer.run_round(n)
                for (model, fmt), timer in timers:
                    result = timer.result(model, fmt, t)
                    report.cases.append(result)
                    if progress:
                        progress(
                            f"{result.key}: {result.total_ms:.1f} ms median, {result.total_min_ms:.1f} ms min"
                        )
                ours = next((rt for (_, f), rt in cases if f in ("onnx", "torch")), None)
                if ours is not None:
                    report.options_ms[t] = time_options(ours, frame, repeats)
    return report


def _open_cases(
    builder: Builder,
    models: list[str],
    formats: list[str],
    peers: list[str],
    threads: int,
    report: BenchReport,
) -> list[tuple[tuple[str, str], Runtime]]:
    cases = []
    for model in models:
        for fmt in formats:
            note = builder.unavailable(model, fmt)
            if note:
                if note not in report.notes:
                    report.notes.append(note)
                continue
            cases.append(((model, fmt), builder.runtime(model, fmt, threads)))
    for peer in peers:
        rt = open_model(peer, threads=threads)
        cases.append(((peer, "tflite" if isinstance(rt, TFLiteRuntime) else "onnx"), rt))
    return cases


# --------------------------------------------------------------------------- tables


def _reference(report: BenchReport, threads: int) -> CaseResult | None:
    return next((c for c in report.cases if c.model == REFERENCE_PEER and c.threads == threads), None)


def markdown_table(report: BenchReport) -> str:
    head = [
        "model",
        "format",
        "threads",
        *[f"{s} ms" for s in STAGES],
        "total ms",
        "fps",
        f"speed vs {REFERENCE_PEER}",
        "total ms (min)",
        f"vs {REFERENCE_PEER} (min)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for c in report.cases:
        ref = _reference(report, c.threads)
        ratio = f"{ref.total_ms / c.total_ms:.2f}x" if ref else "-"
        ratio_min = f"{ref.total_min_ms / c.total_min_ms:.2f}x" if ref else "-"
        cells = [
            c.model,
            c.format,
            str(c.threads),
            *[f"{c.stage_ms[s]:.2f}" for s in STAGES],
            f"{c.total_ms:.2f}",
            f"{c.fps:.1f}",
            ratio,
            f"{c.total_min_ms:.2f}",
            ratio_min,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def options_table(report: BenchReport) -> str:
    threads = sorted(report.options_ms)
    if not threads:
        return ""
    lines = [
        "| post-processing | " + " | ".join(f"ms @ {t} thread(s)" for t in threads) + " |",
        "|---|" + "---:|" * len(threads),
    ]
    for name in OPTION_CONFIGS:
        lines.append(f"| {name} | " + " | ".join(f"{report.options_ms[t][name]:.2f}" for t in threads) + " |")
    return "\n".join(lines)
