"""``portraitseg train`` under ``torchrun``: every rank runs the command, but what it says to the
user (the --epochs note, the best-weights line) is said once, by rank 0, not once per process."""

from __future__ import annotations

from pathlib import Path

import pytest

from portraitseg.cli import main
from portraitseg.commands import train as train_cmd


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text("time_budget_s: 470\n")
    return path


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_epochs_note_is_said_by_rank_0_only(rank: str, said: bool, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from portraitseg.cli import build_parser

    monkeypatch.setenv("RANK", rank)
    args = build_parser().parse_args(["train", "--config", str(_config(tmp_path)), "--epochs", "1"])
    cfg = train_cmd.build_config(args)
    assert cfg.time_budget_s is None and cfg.epochs == 1  # every rank applies it
    assert ("--epochs 1 given" in capsys.readouterr().err) is said


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_best_weights_line_is_said_by_rank_0_only(rank: str, said: bool, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    import portraitseg.train.trainer as trainer

    best = tmp_path / "runs" / "r" / "best.pt"

    def fake_train(cfg, resume=None, epochs=None) -> Path:  # the trainer's own tests train for real
        best.parent.mkdir(parents=True, exist_ok=True)
        best.write_bytes(b"weights")
        return best

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setenv("RANK", rank)
    assert main(["train", "--out-dir", str(tmp_path / "runs"), "--run", "r"]) == 0
    assert (f"best weights: {best}" in capsys.readouterr().out) is said


def test_wrong_init_weights_fail_before_loading_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--init-weights given an exported model fails in one line before the caches are loaded (it
    failed after loading them, minutes in with a full cache)."""
    pytest.importorskip("torch")
    import portraitseg.train.trainer as trainer

    def must_not_train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trainer, "train", must_not_train)
    onnx = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "weights" / "default.onnx"
    argv = ["train", "--out-dir", str(tmp_path / "runs"), "--run", "r", "--init-weights", str(onnx)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(onnx) in err and "exported ONNX model" in err, err
