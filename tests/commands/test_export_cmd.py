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


def test_an_earlier_export_is_not_replaced_without_overwrite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Re-running an export over an earlier result (the default name or -o) is refused in one line
    before any work, as every other command's existing outputs; --overwrite replaces it."""
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "portraitseg-64-fp32.onnx"
    earlier.write_bytes(b"an earlier export")
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(b"keep me")
    for argv in (["--size", "64"], ["--size", "64", "-o", str(mine)]):
        assert main(["export", "default", "--verify-count", "1", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "exists (use --overwrite to replace it)" in err, err
    assert earlier.read_bytes() == b"an earlier export" and mine.read_bytes() == b"keep me"
    again = ["export", "default", "--size", "64", "--verify-count", "1", "-o", str(mine), "--overwrite"]
    assert main(again) == 0
    assert mine.read_bytes()[:8] != b"keep me" and mine.stat().st_size > 1_000_000


def test_an_output_with_the_wrong_extension_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    assert main(["export", "default", "-o", "model.txt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("model.txt: an export to onnx must end in .onnx"), err  # said "a onnx export"
    assert len(err.splitlines()) == 1 and not any(tmp_path.iterdir())
