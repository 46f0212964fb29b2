"""Regression floors for the bundled default model on the real validation sets, side by side
with MediaPipe Selfie (256). Floors are the current model's numbers minus a small margin
(measured with the stage-7 weights: picsart_selfie/val 0.928, eg1800/val 0.951, vikram_val 0.903,
ccp_person/val 0.945, voc_person/val 0.808 mIoU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import model_threads
from portraitseg.data import open_dataset
from portraitseg.evaluate import evaluate
from portraitseg.runtimes import Runtime, open_model

FLOORS = {
    "picsart_selfie": 0.923,
    "eg1800": 0.946,
    "vikram_val": 0.898,
    "ccp_person": 0.940,
    "voc_person": 0.803,
}


@pytest.fixture(scope="module")
def scores(shared_data: Path, anchors_dir: Path) -> dict[str, dict[str, float]]:
    """mIoU of ours and MediaPipe on each validation set (computed once for the module)."""
    runtimes: dict[str, Runtime] = {
        "ours": open_model("default", threads=model_threads()),
        "mediapipe": open_model("mediapipe_selfie_256", threads=model_threads(), anchors=anchors_dir),
    }
    out: dict[str, dict[str, float]] = {}
    for name in FLOORS:
        data = shared_data / name
        out[name] = {
            who: evaluate(rt, open_dataset(data, "val.txt"), progress=False).summary["miou"]
            for who, rt in runtimes.items()
        }
    return out


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_bundled_model_meets_floor(scores: dict[str, dict[str, float]], name: str) -> None:
    assert scores[name]["ours"] >= FLOORS[name], f"{name}: {scores[name]}"


def test_mediapipe_scores_are_plausible(scores: dict[str, dict[str, float]]) -> None:
    # Guards the comparison itself: a broken peer runtime would make "ours > peer" trivial.
    assert scores["vikram_val"]["mediapipe"] > 0.9
    assert scores["ccp_person"]["mediapipe"] > 0.9


# MediaPipe's mIoU as measured (the reasons' reference; the test compares live scores).
MEDIAPIPE = {"picsart_selfie": 0.948, "vikram_val": 0.920, "eg1800": 0.958}


def _not_yet(ours: float, name: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(
        strict=True,
        reason=f"issue floor not met yet: bundled model {ours:.3f} vs MediaPipe {MEDIAPIPE[name]:.3f} mIoU "
        f"on {name}; flips to XPASS (and fails strict) once a better model is bundled -- then drop this mark",
    )


@pytest.mark.parametrize(
    "name",
    [
        "ccp_person",
        "voc_person",
        pytest.param("picsart_selfie", marks=_not_yet(0.928, "picsart_selfie")),
        pytest.param("vikram_val", marks=_not_yet(0.903, "vikram_val")),
        pytest.param("eg1800", marks=_not_yet(0.951, "eg1800")),
    ],
)
def test_beats_mediapipe(scores: dict[str, dict[str, float]], name: str) -> None:
    assert scores[name]["ours"] > scores[name]["mediapipe"], scores[name]
