"""The one pipeline: Segmenter, serve, video and bench all produce what Pipeline produces."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from portraitseg import Segmenter, load_image
from portraitseg import postprocess as pp
from portraitseg.pipeline import RENDER_KINDS, Pipeline
from portraitseg.runtimes import open_model
from portraitseg.temporal import SmoothingConfig

ASSET = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets" / "astronaut.jpg"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return load_image(ASSET)


@pytest.fixture(scope="module")
def runtime():
    return open_model("default", "onnx", threads=1)


def test_stages_chain_to_the_segmenter_result(runtime, image: np.ndarray) -> None:
    pipe = Pipeline(runtime)
    seg = Segmenter("default", backend="onnx", threads=1)
    prob = pipe.lowres(image)
    assert prob.shape == runtime.input_size  # the model's own size, read from the file
    alpha = pipe.alpha(prob, image)
    np.testing.assert_array_equal(alpha, seg.mask(image))
    np.testing.assert_array_equal(pipe(image, "mask"), pp.to_u8(alpha))
    np.testing.assert_array_equal(pipe.render(image, alpha, "cutout"), seg.cutout(image))
    np.testing.assert_array_equal(pipe.render(image, alpha, "composite", (0, 255, 0)),
                                  seg.replace_background(image, (0, 255, 0)))
    assert pipe.render(image, alpha, "none") is image
    assert set(pipe.times.ms()) >= {"model", "post", "composite"}
    with pytest.raises(ValueError, match="render kind"):
        pipe.render(image, alpha, "sepia")
    assert "grid" not in RENDER_KINDS  # predict's preview is built on top, not a pipeline stage


def test_smoothing_runs_on_the_low_res_probability_and_toggles(runtime, image: np.ndarray) -> None:
    smooth = Pipeline(runtime, smoothing=SmoothingConfig())
    plain = Pipeline(runtime)
    first = smooth.lowres(image)
    np.testing.assert_array_equal(first, plain.lowres(image))  # nothing to smooth with yet
    darker = (image * 0.9).astype(np.uint8)
    assert not np.array_equal(smooth.lowres(darker), plain.lowres(darker))
    smooth.set_smoothing(False)
    np.testing.assert_array_equal(smooth.lowres(darker), plain.lowres(darker))
    assert "smooth" in smooth.times.ms()


def test_none_alpha_is_all_background(runtime, image: np.ndarray) -> None:
    alpha = Pipeline(runtime).alpha(None, image)
    assert alpha.shape == image.shape[:2] and not alpha.any()


class _Frames:
    """A background source: a new frame per call (like a looping background video)."""

    def __init__(self) -> None:
        self.calls = 0

    def next(self) -> np.ndarray:
        self.calls += 1
        return np.full((10, 10, 3), 7 * self.calls, np.uint8)


def test_composite_takes_a_per_frame_background_source(runtime, image: np.ndarray) -> None:
    pipe, source = Pipeline(runtime), _Frames()
    alpha = np.zeros(image.shape[:2], np.float32)
    assert pipe.render(image, alpha, "composite", source)[0, 0, 0] == 7
    assert pipe.render(image, alpha, "composite", source)[0, 0, 0] == 14 and source.calls == 2


def test_tflite_runtime_is_copied_per_thread() -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT runtime not installed: pip install '.[tflite]'")
    rt = open_model("default", "tflite", threads=1)
    copies: list = []
    thread = threading.Thread(target=lambda: copies.append(rt.for_thread()))
    thread.start()
    thread.join()
    assert copies[0] is not rt and copies[0].path == rt.path
    onnx_rt = open_model("default", "onnx", threads=1)
    assert onnx_rt.for_thread() is onnx_rt  # onnxruntime sessions are thread-safe: shared
