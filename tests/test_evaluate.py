"""evaluate(): synthetic datasets with known answers, report writers, and MediaPipe on real data."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.data import DataError, open_dataset
from portraitseg.evaluate import (
    compare,
    comparison_table,
    evaluate,
    json_summary,
    summary_markdown,
    write_gallery,
    write_reports,
    write_rows_csv,
)
from portraitseg.runtimes import InputFormat, OutputFormat, Runtime, open_model

HEADLINE_KEYS = {"miou", "person_iou", "background_iou", "pixel_accuracy", "boundary_f1", "n_images"}


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
