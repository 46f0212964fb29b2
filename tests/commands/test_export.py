"""``portraitseg export`` (and every command that reads a ``.pt``) given an exported model: the
usual first-hour mistake of passing ``default.onnx`` where a checkpoint goes. One line that says
what the file is and what to give instead, never the crafted-pickle refusal ("loading it would
run code"), which is for files that really are pickles asking for code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from portraitseg.cli import main

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "weights"


@pytest.mark.parametrize("name", ["default.onnx", "default.tflite"])
@pytest.mark.parametrize("argv", [["export"], ["bench", "--formats", "onnx", "--peers", "", "--models"]])
def test_an_exported_model_is_named_as_such(name: str, argv: list[str], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    model = tmp_path / name
    shutil.copyfile(WEIGHTS / name, model)
    before = model.read_bytes()
    monkeypatch.chdir(tmp_path)
    assert main([*argv, str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(model) in err and "exported" in err and ".pt" in err, err
    assert "run code" not in err, err
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written
