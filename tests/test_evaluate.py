"""evaluate(): synthetic datasets with known answers, report writers, and MediaPipe on real data
(hand masks and teacher alpha)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.data import DataError, open_dataset
from portraitseg.evaluate import check_threshold, compare, evaluate
from portraitseg.postprocess import PostprocessConfig
from portraitseg.reports import (
    comparison_table,
    json_summary,
    summary_markdown,
    write_gallery,
    write_reports,
    write_rows_csv,
)
from portraitseg.runtimes import InputFormat, OutputFormat, Runtime, open_model

HEADLINE_KEYS = {"miou", "person_iou", "background_iou", "pixel_accuracy", "boundary_f1", "n_images"}
ALPHA_KEYS = {"sad", "mse", "grad", "mad"}
# Post-processing that leaves a same-size probability as it is: the final alpha is the model's.
IDENTITY_POST = PostprocessConfig(guided=False, keep_largest=False)


def shared_dir() -> Path:
    """The ``shared`` folder beside the repo root, or $PORTRAITSEG_SHARED."""
    env = os.environ.get("PORTRAITSEG_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared"


@pytest.fixture(scope="module")
def vikram_val() -> Path:
    root = shared_dir() / "data" / "vikram_val"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set PORTRAITSEG_SHARED to the shared folder)")
    return root


@pytest.fixture(scope="module")
def pseudo_selfie() -> Path:
    """Teacher soft alpha (alpha/, values rounded to /16); never in our model's training mix."""
    root = shared_dir() / "data" / "pseudo_selfie"
    if not (root / "alpha").is_dir():
        pytest.skip(f"real alpha data not found at {root} (set PORTRAITSEG_SHARED to the shared folder)")
    return root


@pytest.fixture(scope="module")
def mediapipe() -> Runtime:
    anchors = shared_dir() / "anchors"
    if not anchors.is_dir():
        pytest.skip(f"peer models not found at {anchors} (set PORTRAITSEG_SHARED to the shared folder)")
    return open_model("mediapipe_selfie_256", threads=1, anchors=anchors)


class RedRuntime(Runtime):
    """A "model" whose person probability is the red channel: exact on the synthetic set."""

    backend = "test"

    def __init__(self, size: int = 64, name: str = "red") -> None:
        self.name = name
        self.input_format = InputFormat((size, size), "NHWC")
        self.output_format = OutputFormat("probability", "NHWC")

    @property
    def num_threads(self) -> int | None:
        return None

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return tensor[..., :1].copy()


class OracleRuntime(Runtime):
    """Answers each image with its own ground truth (looked up by the image's bytes) at the
    image's size: a perfect model."""

    backend = "test"

    def __init__(self, dataset, n: int, name: str = "oracle") -> None:
        self.name = name
        samples = [dataset[i] for i in range(n)]
        self.truth = {self._key(s.image): s.target for s in samples}
        self.input_format = InputFormat(samples[0].image.shape[:2], "NHWC")
        self.output_format = OutputFormat("probability", "NHWC")

    @staticmethod
    def _key(image: np.ndarray) -> str:
        return hashlib.sha1(image.tobytes()).hexdigest()

    @property
    def num_threads(self) -> int | None:
        return None

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        return image

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.truth[self._key(tensor)][None, ..., None]


def make_dataset(
    root: Path, masks: dict[str, np.ndarray], ignore: dict[str, np.ndarray] | None = None
) -> Path:
    """images/ with a bright-red person on dark background, masks/ (0/255), optional ignore/."""
    for sub in ("images", "masks") + (("ignore",) if ignore else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for stem, mask in masks.items():
        image = np.full((*mask.shape, 3), 30, np.uint8)
        image[mask] = (230, 30, 30)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask.astype(np.uint8) * 255)
        if ignore and stem in ignore:
            cv2.imwrite(str(root / "ignore" / f"{stem}.png"), ignore[stem].astype(np.uint8) * 255)
    return root


def box(h: int, w: int, top: int, left: int, bh: int, bw: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top : top + bh, left : left + bw] = True
    return mask


@pytest.fixture()
def synthetic(tmp_path: Path) -> Path:
    return make_dataset(
        tmp_path / "synth",
        {"a": box(64, 64, 10, 10, 30, 20), "b": box(64, 64, 0, 20, 64, 24), "c": box(64, 64, 40, 5, 10, 50)},
    )


def test_perfect_model_scores_one(synthetic: Path) -> None:
    result = evaluate(RedRuntime(), open_dataset(synthetic), progress=False)
    s = result.summary
    assert HEADLINE_KEYS <= set(s) and s["n_images"] == 3
    for key in ("miou", "person_iou", "background_iou", "pixel_accuracy", "boundary_f1"):
        assert s[key] == 1.0 and s["mean_per_image"][key] == 1.0
    assert [r.name for r in result.rows] == ["a", "b", "c"]
    assert all(r.ms >= r.infer_ms >= 0 for r in result.rows)


def test_threshold_above_every_probability_predicts_background(synthetic: Path) -> None:
    # Red is 230/255 = 0.90 on the person: a 0.95 threshold predicts nothing.
    s = evaluate(RedRuntime(), open_dataset(synthetic), threshold=0.95, progress=False).summary
    person = 30 * 20 + 64 * 24 + 10 * 50
    assert s["person_iou"] == 0.0
    assert s["pixel_accuracy"] == pytest.approx(1 - person / (3 * 64 * 64))
    assert s["counts"] == {"tp": 0, "fp": 0, "fn": person, "tn": 3 * 64 * 64 - person}


def test_resize_path_and_ignore_map(tmp_path: Path) -> None:
    truth = box(96, 80, 20, 20, 50, 30)
    wrong = np.zeros((96, 80), bool)
    wrong[:, :10] = True  # the mask claims a person here that the image does not show
    rt = RedRuntime(size=64)  # 96x80 images: stretched to 64x64 and back
    plain_root = make_dataset(tmp_path / "plain", {"x": truth})
    ignore_root = make_dataset(tmp_path / "ign", {"x": truth}, ignore={"x": wrong})
    for root in (plain_root, ignore_root):
        cv2.imwrite(str(root / "masks" / "x.png"), (truth | wrong).astype(np.uint8) * 255)
    plain = evaluate(rt, open_dataset(plain_root), progress=False).summary
    ignored = evaluate(rt, open_dataset(ignore_root), progress=False).summary
    assert plain["counts"]["fn"] >= wrong.sum()
    assert ignored["counts"]["fn"] < 100  # only resampling blur at the box edges remains
    assert ignored["person_iou"] > 0.95 > plain["person_iou"]


def test_corrupt_image_names_file_or_is_skipped(synthetic: Path) -> None:
    (synthetic / "images" / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"b\.png"):
        evaluate(RedRuntime(), open_dataset(synthetic), progress=False)
    result = evaluate(RedRuntime(), open_dataset(synthetic, on_error="skip"), progress=False)
    assert result.summary["n_images"] == 2 and result.summary["n_skipped"] == 1
    assert "b.png" in result.skipped[0]


def test_writers_are_complete_and_atomic(synthetic: Path, tmp_path: Path) -> None:
    result = evaluate(RedRuntime(), open_dataset(synthetic), threshold=0.95, progress=False, keep_worst=2)
    assert len(result.worst) == 2
    out = tmp_path / "out"
    csv_path = write_rows_csv(result, out / "rows.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["name"] for r in rows] == ["a", "b", "c"]
    assert set(rows[0]) == {
        "name",
        "pixel_acc",
        "person_iou",
        "bg_iou",
        "miou",
        "boundary_f1",
        "ms",
        "infer_ms",
    }
    two = cv2.imread(str(write_gallery(result, out / "worst.png")))
    one = cv2.imread(str(write_gallery(result, out / "worst1.png", k=1)))
    assert two is not None and one is not None
    assert two.shape[1] == one.shape[1] and two.shape[0] > 1.5 * one.shape[0]  # one row per image
    md = summary_markdown(result)
    assert "red" in md and "per-image mean" in md
    written = write_reports({"red": {"synth": result}}, out / "reports")
    assert {p.name for p in written} >= {
        "per_image.csv",
        "summary.json",
        "summary.md",
        "worst.png",
        "comparison.md",
    }
    assert json.loads((out / "reports" / "red" / "synth" / "summary.json").read_text())["n_images"] == 3
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_compare_table_and_json_shapes(synthetic: Path, tmp_path: Path) -> None:
    other = make_dataset(tmp_path / "other", {"z": box(64, 64, 5, 5, 20, 20)})
    results = compare(
        [RedRuntime(name="red"), RedRuntime(name="red32", size=32)],
        [("synth", open_dataset(synthetic)), ("other", open_dataset(other))],
        progress=False,
    )
    table = comparison_table(results).splitlines()
    assert table[0].startswith("| model | synth mIoU") and "other BF1" in table[0]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["red", "red32"]
    nested = json_summary(results)
    assert set(nested) == {"red", "red32"} and set(nested["red"]) == {"synth", "other"}
    flat = json_summary({"red": {"synth": results["red"]["synth"]}})
    assert HEADLINE_KEYS <= set(flat)


def test_mediapipe_on_vikram_val(vikram_val: Path, mediapipe: Runtime, tmp_path: Path) -> None:
    result = evaluate(mediapipe, open_dataset(vikram_val, "val.txt"), limit=10, progress=False)
    s = result.summary
    assert HEADLINE_KEYS <= set(s) and s["n_images"] == 10 and len(result.rows) == 10
    assert set(s["mean_per_image"]) >= {
        "miou",
        "person_iou",
        "background_iou",
        "pixel_accuracy",
        "boundary_f1",
    }
    assert s["miou"] > 0.8
    assert 0.0 < s["boundary_f1"] <= 1.0
    assert result.worst[0].person_iou == min(r.person_iou for r in result.rows)
    assert write_gallery(result, tmp_path / "worst.png", k=3).is_file()


def make_alpha_dataset(root: Path, alphas: dict[str, np.ndarray], red_offset: int = 0) -> Path:
    """images/ whose red channel is the alpha (plus ``red_offset``), alpha/ with the soft matte:
    RedRuntime's prediction is then the truth shifted by ``red_offset`` / 255."""
    (root / "images").mkdir(parents=True)
    (root / "alpha").mkdir()
    for stem, alpha in alphas.items():
        image = np.full((*alpha.shape, 3), 20, np.uint8)
        image[..., 0] = alpha + red_offset
        cv2.imwrite(str(root / "images" / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "alpha" / f"{stem}.png"), alpha)
    return root


def soft_square(size: int = 64) -> np.ndarray:
    """A 0/255 square with a 16-level soft ramp on its left side (like the teacher's /16 alpha)."""
    alpha = np.zeros((size, size), np.uint8)
    alpha[16:48, 24:48] = 255
    alpha[16:48, 8:24] = np.arange(16, dtype=np.uint8) * 16
    return alpha


def test_alpha_truth_gets_matting_errors_zero_when_perfect(tmp_path: Path) -> None:
    alpha = {"a": soft_square(), "b": np.roll(soft_square(), 5, axis=1)}
    perfect = evaluate(RedRuntime(), open_dataset(make_alpha_dataset(tmp_path / "p", alpha)),
                       progress=False, postprocess=IDENTITY_POST).summary
    assert set(perfect["alpha"]) >= ALPHA_KEYS | {"n_images", "units", "postprocess"}
    assert perfect["alpha"]["n_images"] == 2 and perfect["alpha"]["aggregation"] == "mean per image"
    for key in ALPHA_KEYS:
        assert perfect["alpha"][key] == pytest.approx(0.0, abs=1e-4)
    assert perfect["miou"] == 1.0
    # Red 51 levels (0.2) above the truth everywhere: MAD 0.2 x 1e3, MSE 0.04 x 1e3, SAD 0.2 x
    # 64 x 64 / 1e3, and no gradient error (min-max normalisation removes a constant shift).
    half = make_alpha_dataset(tmp_path / "s", {"a": soft_square() // 2}, red_offset=51)
    shifted = evaluate(RedRuntime(), open_dataset(half), progress=False, postprocess=IDENTITY_POST)
    s = shifted.summary["alpha"]
    assert s["mad"] == pytest.approx(200.0, rel=1e-4)
    assert s["mse"] == pytest.approx(40.0, rel=1e-4)
    assert s["sad"] == pytest.approx(0.2 * 64 * 64 / 1e3, rel=1e-4)
    assert s["grad"] == pytest.approx(0.0, abs=1e-6)
    assert shifted.rows[0].mad == pytest.approx(200.0, rel=1e-4)


def test_hard_masks_get_no_matting_errors(synthetic: Path) -> None:
    result = evaluate(RedRuntime(), open_dataset(synthetic), progress=False)
    assert "alpha" not in result.summary and result.rows[0].mad is None
    assert "SAD" not in comparison_table({"red": {"synth": result}})


def test_threshold_outside_zero_one_is_refused(synthetic: Path) -> None:
    for bad in (math.nan, 2.0, 0.0, 1.0, -0.5, math.inf, "x"):
        with pytest.raises(ValueError, match=r"must be (a finite number )?in \(0, 1\); got"):
            check_threshold(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be"):
        evaluate(RedRuntime(), open_dataset(synthetic), threshold=math.nan, progress=False)
    assert check_threshold(0.5) == 0.5


def test_real_alpha_perfect_prediction_scores_zero(pseudo_selfie: Path) -> None:
    ds = open_dataset(pseudo_selfie, "train.txt")
    result = evaluate(OracleRuntime(ds, 3), ds, limit=3, progress=False, postprocess=IDENTITY_POST)
    a = result.summary["alpha"]
    assert a["n_images"] == 3 and result.summary["miou"] == 1.0
    assert (a["sad"], a["mse"], a["grad"], a["mad"]) == (0.0, 0.0, 0.0, 0.0)


def test_real_alpha_metrics_are_sane_through_the_default_postprocessing(
    pseudo_selfie: Path, mediapipe: Runtime
) -> None:
    ds = open_dataset(pseudo_selfie, "train.txt")
    result = evaluate(mediapipe, ds, limit=3, progress=False)
    s, a = result.summary, result.summary["alpha"]
    assert a["postprocess"] == asdict(PostprocessConfig())  # predict's defaults: guided, keep-largest
    assert a["postprocess"]["guided"] is True
    assert s["miou"] > 0.85  # MediaPipe filtered this set: it agrees with the teacher
    # A good segmenter against a teacher matte: a few percent of the pixels wrong on average.
    assert 1.0 < a["mad"] < 100.0 and 0.5 < a["mse"] < a["mad"]  # |e| <= 1, so e^2 <= |e|
    assert 0.0 < a["grad"] < 20.0
    for row in result.rows:  # SAD and MAD are one sum in two units (240x320 images)
        assert row.sad == pytest.approx(row.mad * 240 * 320 / 1e6)
    # The errors are the FINAL alpha's: without guided upsampling they change.
    plain = evaluate(mediapipe, ds, limit=3, progress=False,
                     postprocess=PostprocessConfig(guided=False)).summary["alpha"]
    assert plain["postprocess"]["guided"] is False and plain["mad"] != pytest.approx(a["mad"], rel=1e-3)
