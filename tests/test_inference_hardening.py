"""Segmenter under threads, odd array dtypes and a corrupt-file corpus (issue 11, items 6, 7).

Real vikram_val photos (skip when ../shared is absent); the corrupt files are made in tmp by
``tests/fuzz_corpus.py``.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import pytest

from portraitseg import Segmenter, load_image
from portraitseg.data.io import DataError

STEMS = tuple(f"vikram_{i:03d}" for i in (1, 2, 3, 7))
BACKENDS = ["onnx"] + (["tflite"] if importlib.util.find_spec("ai_edge_litert") else [])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def photos(vikram: Path) -> list[np.ndarray]:
    return [load_image(vikram / "images" / f"{s}.jpg") for s in STEMS]


# --------------------------------------------------------------------------- item 6: threads


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_segmenter_8_threads_give_the_serial_masks(backend: str, photos: list[np.ndarray]) -> None:
    seg = Segmenter(backend=backend, threads=1)
    serial = [seg.mask(p) for p in photos]
    rounds, n_threads = 3, 8
    results: dict[tuple[int, int, int], np.ndarray] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def work(t: int) -> None:
        try:
            start.wait(timeout=60)  # all threads in the pipeline at once
            for r in range(rounds):
                for k in range(len(photos)):
                    i = (k + t + r) % len(photos)  # each thread in its own order
                    results[(t, r, i)] = seg.mask(photos[i])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not errors, errors[0]
    assert len(results) == n_threads * rounds * len(photos)
    differing = [key for key, alpha in results.items() if not np.array_equal(alpha, serial[key[2]])]
    assert not differing, f"{len(differing)} of {len(results)} masks differ from the serial ones"


# --------------------------------------------------------------------------- item 7: dtypes


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    return Segmenter(backend="onnx", threads=1)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int16, np.uint32, np.float32, np.float64])
def test_wide_arrays_holding_0_255_are_8_bit(seg: Segmenter, photos: list[np.ndarray], dtype) -> None:
    rgb = photos[0]
    base = seg.mask(rgb) >= 0.5
    alpha = seg.mask(rgb.astype(dtype))
    assert alpha.shape == rgb.shape[:2]
    assert iou(alpha >= 0.5, base) > 0.99, np.dtype(dtype).name
    assert np.array_equal(load_image(rgb.astype(dtype)), rgb)


def test_unit_floats_still_scaled_by_255(seg: Segmenter, photos: list[np.ndarray]) -> None:
    rgb = photos[1]
    unit = rgb.astype(np.float64) / 255.0
    assert np.abs(load_image(unit).astype(int) - rgb).max() <= 1
    assert iou(seg.mask(unit) >= 0.5, seg.mask(rgb) >= 0.5) > 0.98


@pytest.mark.parametrize(("array", "text"), [
    (np.full((4, 4, 3), 300, np.int64), "int64 image values must be 0..255 (8-bit); got 300..300"),
    (np.full((4, 4, 3), -1, np.int32), "int32 image values must be 0..255 (8-bit); got -1..-1"),
    (np.full((4, 4, 3), 256.0, np.float64), "float64 image values must be in [0, 1] or [0, 255]; got 256"),
    (np.full((4, 4, 3), -0.5, np.float32), "float32 image values must be in [0, 1] or [0, 255]"),
    (np.full((4, 4, 3), np.nan, np.float32), "float32 image has NaN"),
])
def test_out_of_range_arrays_name_dtype_and_range(seg: Segmenter, array: np.ndarray, text: str) -> None:
    with pytest.raises(ValueError) as info:
        seg.mask(array)
    assert text in str(info.value)


# --------------------------------------------------------------------------- fuzz corpus via the API


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's TIFF reader warns on corrupt tags
def test_fuzz_corpus_through_the_api(seg: Segmenter, tmp_path: Path) -> None:
    from fuzz_corpus import corpus, good_samples

    refused = 0
    for s in corpus() + good_samples():
        path = tmp_path / s.filename
        path.write_bytes(s.data)
        try:
            alpha = seg.mask(path)
        except DataError as exc:  # the one error type for a bad file: one line, starts with the path
            message = str(exc)
            assert message.startswith(str(path)) and "\n" not in message, message
            refused += 1
            continue
        assert alpha.ndim == 2 and 0.0 <= alpha.min() and alpha.max() <= 1.0, s.name
    assert refused > len(corpus()) // 2


def test_api_refuses_a_bomb_from_its_header(tmp_path) -> None:
    from imagebombs import png_bomb

    bomb = png_bomb(tmp_path / "bomb.png", 6000, 5000)  # 30 MP, over the 25 MP default
    over = r"bomb\.png: image is (6000x5000 = )?30000000 pixels, over the limit"
    with pytest.raises(DataError, match=over):
        Segmenter(backend="onnx").mask(bomb)


def test_pixel_limit_is_the_segmenters(tmp_path) -> None:
    """The limit travels with the Segmenter (predict passes --max-pixels), not a fixed default."""
    from imagebombs import png_bomb

    photo = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets" / "astronaut.jpg"
    with pytest.raises(DataError, match=r"astronaut\.jpg: image is .*pixels, over the limit of 1000"):
        Segmenter(backend="onnx", max_pixels=1000).mask(photo)
    big = png_bomb(tmp_path / "big.png", 6000, 5000)  # 30 MP: over the default, under this limit
    assert Segmenter(backend="onnx", max_pixels=40_000_000).mask(big).shape == (5000, 6000)


# --------------------------------------------------------------------------- issue 17 item 11: formats

# A real EPS file: PIL's EPS plugin identifies it from its bytes whatever the name, and its
# decoder runs Ghostscript (a PostScript interpreter) on it.
EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 64 48
%%EndComments
0 0 1 setrgbcolor 0 0 64 48 rectfill
showpage
%%EOF
"""


@pytest.fixture
def ghostscript_calls(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call PIL would make to Ghostscript (recorded, and refused so nothing is rendered)."""
    from PIL import EpsImagePlugin

    calls: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise OSError("Ghostscript reached")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", record)
    return calls


def test_eps_named_jpg_never_reaches_ghostscript(seg: Segmenter, tmp_path: Path,
                                                 ghostscript_calls: list[object]) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    as_background = lambda p: seg.replace_background(np.zeros((8, 8, 3), np.uint8), p)  # noqa: E731
    refused = rf"^{photo}: not a readable image \(unknown or corrupt format; JPEG, PNG"
    for call in (load_image, seg.mask, seg.cutout, as_background):
        with pytest.raises(DataError, match=refused):
            call(photo)
    assert ghostscript_calls == []


def test_predict_refuses_eps_and_keeps_going(tmp_path: Path, ghostscript_calls: list[object],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from portraitseg.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "photo.jpg").write_bytes(EPS)
    asset = Path(__file__).resolve().parents[1] / "src" / "portraitseg" / "assets" / "astronaut.jpg"
    (tmp_path / "in" / "astronaut.jpg").write_bytes(asset.read_bytes())
    code = main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--backend", "onnx",
                 "--threads", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and ghostscript_calls == []
    assert f"{tmp_path / 'in' / 'photo.jpg'}: not a readable image (unknown or corrupt format" in err
    # (".portraitseg-predict.jsonl": predict's hidden record of finished images, issue 18)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".portraitseg-predict.jsonl",
                                                                    "astronaut.mask.png"]
