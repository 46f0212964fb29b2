"""``portraitseg video --bench``: the per-stage CPU profile and end-to-end frames/s it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portraitseg.bench.video import STAGE_THREADS
from portraitseg.cli import main
from portraitseg.video.writer import h264_ffmpeg


@pytest.mark.parametrize("bench_input", ["mjpg", "h264"])
def test_video_bench_reports_each_stage(bench_input: str, tmp_path: Path, capsys) -> None:
    if h264_ffmpeg() is None:
        pytest.skip("ffmpeg with libx264 not installed: apt-get install -y ffmpeg")
    out = tmp_path / "bench.json"
    code = main(["video", "--bench", "--bench-frames", "12", "--bench-input", bench_input, "--quiet",
                 "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["frames"] == 12 and report["size"] == [1280, 720] and report["codec"] == "h264"
    assert report["input_codec"] == ("H.264" if bench_input == "h264" else "MJPG")
    assert report["encoder"] == {"preset": "ultrafast", "crf": 20.0, "threads": 1}
    cpu = report["stage_cpu_ms"]
    assert set(cpu) == set(STAGE_THREADS)  # every stage timed, the encoder process included
    assert all(ms > 0 for ms in cpu.values())
    # The process's CPU covers its stages; with the encoder's it bounds the frame rate.
    assert report["process_cpu_ms"] >= report["stage_cpu_ms_sum"] - cpu["x264"] - 0.5
    total = report["process_cpu_ms"] + cpu["x264"]
    assert report["cpu_ms_per_frame"] == pytest.approx(total, abs=0.02)
    assert report["cpu_bound_fps"] == pytest.approx(report["cpu_count"] * 1000 / total, rel=0.01)
    assert report["end_to_end_fps"] > 0
    table = capsys.readouterr().err
    assert "| x264 | ffmpeg process |" in table and "CPU-bound limit" in table
