"""``portraitseg eval`` end to end: JSON shapes, reports, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from portraitseg.checkpoint import save_weights
from portraitseg.cli import main
from portraitseg.models import create_model

FLAT_KEYS = {
    "miou",
    "person_iou",
    "pixel_accuracy",
    "boundary_f1",
    "n_images",
    "background_iou",
    "mean_per_image",
}


def shared_dir() -> Path:
    """The ``shared`` folder beside the repo root, or $PORTRAITSEG_SHARED."""
    env = os.environ.get("PORTRAITSEG_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture(scope="module")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data" / "vikram_val").is_dir() or not (path / "anchors").is_dir():
        pytest.skip(f"real data/peer models not found under {path} (set PORTRAITSEG_SHARED)")
    return path


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A random-init model: enough to exercise the CLI without the bundled weights."""
    torch.manual_seed(0)
    return save_weights(create_model("mobile-unet-035-bilinear", input_size=64), tmp_path / "tiny.pt")


def make_dataset(root: Path, stems: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem in stems:
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
        mask = np.zeros((48, 40), np.uint8)
        mask[10:40, 8:30] = 255
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root


def test_single_model_json_is_flat_and_out_has_gallery(shared: Path, tmp_path: Path, capsys) -> None:
    out_json, out_dir = tmp_path / "out.json", tmp_path / "reports"
    args = ["eval", "mediapipe_selfie_256", "--data", str(shared / "data" / "vikram_val"), "--limit", "5"]
    args += ["--anchors", str(shared / "anchors"), "--json", str(out_json), "--out", str(out_dir), "--quiet"]
    assert main(args) == 0
    summary = json.loads(out_json.read_text())
    assert FLAT_KEYS <= set(summary) and summary["n_images"] == 5
    assert summary["miou"] > 0.8
    folder = out_dir / "mediapipe_selfie_256" / "vikram_val_val"
    assert (folder / "worst.png").is_file() and (folder / "per_image.csv").is_file()
    assert (out_dir / "comparison.md").is_file()
    table = capsys.readouterr().out
    assert "| mediapipe_selfie_256 |" in table and "vikram_val/val mIoU" in table


def test_console_script_as_in_the_docs(shared: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PORTRAITSEG_ANCHORS": str(shared / "anchors")}
    cmd = [sys.executable, "-m", "portraitseg", "eval", "mediapipe_selfie_256"]
    cmd += ["--data", str(shared / "data" / "vikram_val"), "--limit", "5", "--json", "out.json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert FLAT_KEYS <= set(json.loads((tmp_path / "out.json").read_text()))


def test_several_models_json_is_nested(shared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "nested.json"
    args = ["eval", str(tiny_checkpoint), "--peers", "mediapipe_selfie_256,prisma_net_256"]
    args += [
        "--data",
        str(shared / "data" / "vikram_val"),
        "--limit",
        "2",
        "--anchors",
        str(shared / "anchors"),
    ]
    args += ["--json", str(out_json), "--quiet"]
    assert main(args) == 0
    nested = json.loads(out_json.read_text())
    assert set(nested) == {"tiny", "mediapipe_selfie_256", "prisma_net_256"}
    assert FLAT_KEYS <= set(nested["prisma_net_256"]["vikram_val/val"])


def test_corrupt_image_exits_2_naming_the_file(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", ["good", "broken"])
    (data / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and err[0].startswith("portraitseg eval: error:")
    # --skip-bad evaluates the rest, lists what was skipped and exits 1 (as cache and prepare do).
    out_json = tmp_path / "s.json"
    assert (
        main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--json", str(out_json)]) == 1
    )
    assert json.loads(out_json.read_text())["n_images"] == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 file(s) skipped per model" in err


def test_bomb_and_all_bad_with_skip_bad(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from imagebombs import png_bomb

    data = make_dataset(tmp_path / "ds", ["good", "bomb"])
    (data / "images" / "bomb.jpg").unlink()
    png_bomb(data / "images" / "bomb.png")
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "bomb.png: image is" in err and "over the limit of" in err and "Traceback" not in err
    # Every sample bad: the reasons are listed, then the one-line error.
    code = main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--quiet",
                 "--max-pixels", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "skipped: " in err and "good.jpg: image is" in err and "bomb.png: image is" in err
    assert "no images were evaluated (2 skipped)" in err


def test_threads_must_be_positive(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_checkpoint), "--data", str(tmp_path), "--threads", "-1"])
    assert "--threads: must be at least 1, got -1" in capsys.readouterr().err


def test_peers_outside_the_repo(tmp_path: Path, monkeypatch, capsys) -> None:
    from portraitseg.runtimes import factory

    if not (Path(__file__).resolve().parents[2] / ".." / "shared" / "anchors").is_dir():
        pytest.skip("../shared/anchors beside the repo not found")
    data = make_dataset(tmp_path / "ds", ["a"])
    monkeypatch.chdir(tmp_path)  # ../shared/anchors does not exist from here
    monkeypatch.delenv("PORTRAITSEG_ANCHORS", raising=False)
    anchors = factory.peer_path(factory.peer_spec("sinet_320"))
    assert anchors.is_file()  # found beside the repo checkout instead
    monkeypatch.setenv("PORTRAITSEG_ANCHORS", str(tmp_path / "nowhere"))
    assert main(["eval", "--peers", "sinet_320", "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sinet_320.onnx: peer model file not found" in err and "--anchors" in err
    assert "PORTRAITSEG_ANCHORS" in err
    # Without the tflite extra, a .tflite peer names the extra to install.
    monkeypatch.delenv("PORTRAITSEG_ANCHORS")
    real = factory._installed
    monkeypatch.setattr(factory, "_installed", lambda m: False if m == "ai_edge_litert" else real(m))
    assert main(["eval", "--peers", "all", "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'portraitseg[tflite]'" in err


def test_bad_arguments_exit_2(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", ["a"])
    assert main(["eval", "--peers", "nope", "--data", str(data)]) == 2
    assert "unknown peer model 'nope'" in capsys.readouterr().err
    assert main(["eval", "--data", str(data)]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.pt"), "--data", str(data)]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_eval_default_runs_the_backend_predict_runs(shared: Path, tmp_path: Path) -> None:
    """'default' means one thing: eval and predict (Segmenter) open the same bundled file."""
    from portraitseg import Segmenter

    out_json = tmp_path / "d.json"
    args = ["eval", "default", "--data", str(shared / "data" / "vikram_val"), "--limit", "2", "--quiet",
            "--json", str(out_json)]
    assert main(args) == 0
    assert json.loads(out_json.read_text())["backend"] == Segmenter(threads=1).runtime.backend
    assert main([*args, "--backend", "onnx"]) == 0
    assert json.loads(out_json.read_text())["backend"] == "onnxruntime"
