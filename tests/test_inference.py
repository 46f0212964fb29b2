"""Segmenter / load_image: every input kind, EXIF orientation, outputs, accuracy, backend agreement.

Input variants (grayscale, RGBA, 16-bit, CMYK, palette, EXIF-rotated) are generated in tmp from a
real vikram_val photo at test time; nothing derived from the data is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitseg import Segmenter, load_image
from portraitseg.data.io import DataError, read_gray
from portraitseg.postprocess import PostprocessConfig

STEM = "vikram_001"  # landscape (183x276): a 90-degree EXIF rotation changes the shape


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> Path:
    path = shared_data / "vikram_val" / "images" / f"{STEM}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found (set PORTRAITSEG_SHARED)")
    return path


@pytest.fixture(scope="module")
def truth(shared_data: Path) -> np.ndarray:
    return read_gray(shared_data / "vikram_val" / "masks" / f"{STEM}.png") >= 128


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter(backend="onnx", threads=1)


@pytest.fixture(scope="module")
def rgb(photo: Path) -> np.ndarray:
    return load_image(photo)


def test_input_kinds_agree(seg: Segmenter, photo: Path, rgb: np.ndarray) -> None:
    from_path = seg.mask(photo)
    assert np.array_equal(from_path, seg.mask(str(photo)))
    assert np.array_equal(from_path, seg.mask(rgb))
    with Image.open(photo) as im:
        assert np.array_equal(from_path, seg.mask(im))


def test_outputs_shapes_dtypes_ranges(seg: Segmenter, rgb: np.ndarray) -> None:
    h, w = rgb.shape[:2]
    alpha = seg.mask(rgb)
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    rgba = seg.cutout(rgb)
    assert rgba.shape == (h, w, 4) and rgba.dtype == np.uint8
    assert np.array_equal(rgba[..., :3], rgb)
    assert np.abs(rgba[..., 3].astype(int) - np.rint(alpha * 255)).max() <= 1
    for bg in ((0, 255, 0), "green", "#00ff00", "blur", rgb[::-1].copy(), Image.fromarray(rgb)):
        out = seg.replace_background(rgb, bg)
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
    green = seg.replace_background(rgb, "green")
    assert np.array_equal(green, seg.replace_background(rgb, (0, 128, 0)))  # PIL's CSS "green"
    with pytest.raises(ValueError, match="not an image file"):
        seg.replace_background(rgb, "no-such-colour")


def test_accuracy_on_real_photo(seg: Segmenter, photo: Path, truth: np.ndarray) -> None:
    pred = seg.mask(photo) >= 0.5
    assert iou(pred, truth) > 0.7


def test_onnx_and_torch_agree(seg: Segmenter, rgb: np.ndarray) -> None:
    torch_seg = Segmenter(backend="torch", threads=1)
    a, b = seg.mask(rgb), torch_seg.mask(rgb)
    assert np.abs(a - b).max() < 1e-3
    assert iou(a >= 0.5, b >= 0.5) > 0.999


def test_file_formats(seg: Segmenter, rgb: np.ndarray, tmp_path: Path) -> None:
    base = seg.mask(rgb) >= 0.5
    h, w = rgb.shape[:2]
    im = Image.fromarray(rgb)
    gray = im.convert("L")
    files = {
        "gray.png": gray,
        "rgba.png": im.convert("RGBA"),
        "cmyk.jpg": im.convert("CMYK"),
        "palette.png": im.convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
        "gray16.png": Image.fromarray(np.asarray(gray).astype(np.uint16) * 257),
    }
    for name, img in files.items():
        path = tmp_path / name
        img.save(path, quality=95) if name.endswith(".jpg") else img.save(path)
        loaded = load_image(path)
        assert loaded.shape == (h, w, 3) and loaded.dtype == np.uint8, name
        mask = seg.mask(path)
        assert mask.shape == (h, w), name
        # Gray/palette/CMYK lose colour detail, so compare masks loosely.
        assert iou(mask >= 0.5, base) > 0.8, name
    # 16-bit: scaled, not clipped (a clipped 16-bit photo would be nearly all white).
    g16 = load_image(tmp_path / "gray16.png")
    assert np.abs(g16[..., 0].astype(int) - np.asarray(gray)).max() <= 1


def test_rgba_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, ..., 3] = 255  # top half opaque red-ish, bottom transparent
    out = load_image(rgba)
    assert (out[:2] == (200, 0, 0)).all() and (out[2:] == 255).all()
    assert np.array_equal(load_image(Image.fromarray(rgba, "RGBA")), out)


def test_array_conversions() -> None:
    assert load_image(np.full((3, 5), 7, np.uint8)).shape == (3, 5, 3)
    assert (load_image(np.full((2, 2, 3), 65535, np.uint16)) == 255).all()
    assert (load_image(np.full((2, 2, 3), 0.5, np.float32)) == 128).all()
    with pytest.raises(ValueError):
        load_image(np.zeros((2, 2, 2), np.uint8))


def test_exif_rotation(seg: Segmenter, rgb: np.ndarray, tmp_path: Path) -> None:
    # Pixels stored rotated 90 degrees counter-clockwise with Orientation 6 ("rotate 90 CW to
    # display"): viewers, and load_image, show the original upright photo.
    stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif)
    upright = load_image(path)
    assert upright.shape == rgb.shape
    mask = seg.mask(path)
    assert mask.shape == rgb.shape[:2]
    assert iou(mask >= 0.5, seg.mask(rgb) >= 0.5) > 0.95


def test_unreadable_files_name_the_file(seg: Segmenter, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.jpg"):
        seg.mask(bad)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataError, match="truncated.png"):
        load_image(truncated)
    with pytest.raises(DataError, match="missing.jpg: file not found"):
        load_image(tmp_path / "missing.jpg")


def test_postprocess_config_is_used(rgb: np.ndarray) -> None:
    soft = Segmenter(threads=1, postprocess=PostprocessConfig(guided=False, keep_largest=False))
    hard = Segmenter(threads=1, postprocess=PostprocessConfig(guided=False, keep_largest=False,
                                                              smoothstep=(0.45, 0.55)))
    a, b = soft.mask(rgb), hard.mask(rgb)
    mid = lambda x: ((x > 0.05) & (x < 0.95)).sum()  # noqa: E731
    assert mid(b) < mid(a)


def test_package_import_is_lazy() -> None:
    import subprocess
    import sys

    code = ("import sys, portraitseg; assert 'onnxruntime' not in sys.modules; "
            "from portraitseg import Segmenter; Segmenter(backend='onnx'); "
            "assert 'torch' not in sys.modules, 'onnx backend imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bundled_onnx_is_the_bundled_checkpoint(vikram: Path) -> None:
    # default.onnx is exported from default.pt: a re-trained or converted .pt without a fresh
    # export would silently ship two different models.
    from portraitseg.data import open_dataset
    from portraitseg.runtimes import DEFAULT_ONNX, OnnxRuntime, TorchRuntime

    onnx_rt, torch_rt = OnnxRuntime(DEFAULT_ONNX, threads=2), TorchRuntime("default", threads=2)
    assert onnx_rt.input_size == torch_rt.input_size == (224, 224)
    for sample, _ in zip(open_dataset(vikram), range(4)):
        a = onnx_rt.prob(sample.image)
        b = torch_rt.prob(sample.image)
        assert a.shape == b.shape == sample.image.shape[:2]
        assert np.abs(a - b).max() < 1e-3


def test_bundled_tflite_is_the_bundled_checkpoint(vikram: Path) -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT runtime not installed: pip install '.[tflite]'")
    from portraitseg.data import open_dataset
    from portraitseg.runtimes import DEFAULT_TFLITE, TFLiteRuntime, TorchRuntime

    tfl, torch_rt = TFLiteRuntime(DEFAULT_TFLITE, threads=2), TorchRuntime("default", threads=2)
    assert tfl.input_format.layout == "NHWC" and tfl.input_size == (224, 224)
    for sample, _ in zip(open_dataset(vikram), range(4)):
        a, b = tfl.prob(sample.image), torch_rt.prob(sample.image)
        assert a.shape == b.shape == sample.image.shape[:2]
        assert np.abs(a - b).max() < 1e-3


def test_segmenter_tflite_backend_matches_onnx() -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT runtime not installed: pip install '.[tflite]'")
    sample = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets" / "astronaut.jpg"
    image = load_image(sample)
    tfl = Segmenter(backend="tflite", threads=1)
    assert tfl.runtime.backend == "tflite"
    np.testing.assert_allclose(tfl.mask(image), Segmenter(backend="onnx", threads=1).mask(image), atol=2e-3)
