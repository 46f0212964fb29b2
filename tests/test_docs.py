"""The Python examples in docs/api.md run as written and their assertions hold."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, shared_dir

API_DOC = REPO / "docs" / "api.md"
SAMPLE = REPO / "src" / "portraitseg" / "assets" / "astronaut.jpg"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


BLOCKS = python_blocks(API_DOC)


def test_the_api_page_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_api_example_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = BLOCKS[index]
    # Lay out what the page assumes: the repository's files at the working directory (read
    # through a link, so nothing is written into the checkout), ../shared beside it.
    work = tmp_path / "repo"
    work.mkdir()
    (work / "src").symlink_to(REPO / "src", target_is_directory=True)
    shutil.copy(SAMPLE, work / "photo.jpg")
    if "../shared" in code:
        if not shared_dir().is_dir():
            pytest.skip(f"../shared not found: {shared_dir()} (set PORTRAITSEG_SHARED to the shared folder)")
        (tmp_path / "shared").symlink_to(shared_dir().resolve(), target_is_directory=True)
    monkeypatch.chdir(work)
    exec(compile(code, f"{API_DOC.name}[block {index}]", "exec"), {"__name__": "__docs__"})
