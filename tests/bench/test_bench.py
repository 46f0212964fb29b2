"""``portraitseg bench`` writes per-stage timings as JSON (one fast format, no peers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portraitseg.bench import STAGES
from portraitseg.cli import main


def test_bench_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", "--repeats", "2", "--formats", "onnx,onnx-int8", "--peers", "", "--threads", "1",
                 "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "| default | onnx | 1 |" in text
    assert "onnx-int8 skipped" in text  # no --calib-data: noted, not faked
    data = json.loads(out.read_text())
    row = data["default/onnx/1"]
    assert set(row) == {f"{s}_ms" for s in STAGES} | {"total_ms", "total_min_ms", "fps"}
    assert all(v > 0 for v in row.values())
    assert abs(row["fps"] - 1000.0 / row["total_ms"]) < 1e-6
    assert row["total_min_ms"] <= row["total_ms"]
    assert "default/onnx-int8/1" not in data
    assert set(data["_postprocess_options_ms"]["1"]) >= {"guided upsample", "default config"}


def test_bench_times_the_bundled_tflite_without_the_converter(tmp_path: Path, capsys) -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT runtime not installed: pip install '.[tflite]'")
    out = tmp_path / "bench.json"
    code = main(["bench", "--repeats", "2", "--rounds", "1", "--formats", "tflite", "--peers", "",
                 "--threads", "1", "--json", str(out)])
    assert code == 0
    assert "| default | tflite | 1 |" in capsys.readouterr().out
    row = json.loads(out.read_text())["default/tflite/1"]
    assert row["model_ms"] > 0 and row["total_ms"] >= row["model_ms"]
