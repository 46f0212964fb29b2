"""The op and flicker benchmarks that moved out of postprocess.py / temporal.py still run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from portraitseg.bench import postprocess as bench_pp


def test_postprocess_benchmark_runs_small() -> None:
    rows = bench_pp.benchmark(width=160, height=96, low=32, repeats=1)
    assert len(rows) >= 12 and all(fresh >= 0 and reused >= 0 for _, fresh, reused in rows)


@pytest.mark.parametrize("module", ["portraitseg.postprocess", "portraitseg.temporal"])
def test_old_benchmark_entry_points_name_the_new_one(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True)
    assert done.returncode == 1 and "moved: python -m portraitseg.bench" in done.stderr
