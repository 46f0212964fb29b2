"""The Python examples in docs/api.md run as written and their assertions hold."""

from __future__ import annotations

import argparse
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


# ----------------------------------------------------------------- what the pages name exists

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_USE = re.compile(r"portraitseg (\w+)((?:\\\n|[^`\n#])*)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:tests|scripts|configs|src|\.ci)/[\w./-]*[\w/])")


def command_flags(text: str) -> list[tuple[str, str]]:
    """(command, flag) for every ``--flag`` written after ``portraitseg COMMAND`` on one command
    line (continuation lines joined; a ``#`` comment or the closing backtick ends it)."""
    found = []
    for match in COMMAND_USE.finditer(text):
        for flag in re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", match.group(2)):
            found.append((match.group(1), flag))
    return found


def repo_paths(text: str) -> list[str]:
    return [p for p in REPO_PATH.findall(text) if not p.startswith("src/portraitseg/web/")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_flag_a_page_gives_a_command_exists(page: Path) -> None:
    from portraitseg.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    missing = [f"portraitseg {cmd} {flag}" for cmd, flag in command_flags(page.read_text())
               if cmd in commands and flag not in commands[cmd]._option_string_actions]
    assert not missing, f"{page.name} names flags the commands do not have: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_repository_path_a_page_names_exists(page: Path) -> None:
    missing = sorted({p for p in repo_paths(page.read_text()) if not (REPO / p).exists()})
    assert not missing, f"{page.name} names files that are not in the repository: {missing}"


def test_the_checks_find_what_they_look_for() -> None:
    text = ("```bash\nportraitseg export default --nope \\\n    --format onnx  # --not-a-flag\n```\n"
            "see `tests/test_export.py` and `portraitseg eval --peers all`")
    assert command_flags(text) == [("export", "--nope"), ("export", "--format"), ("eval", "--peers")]
    assert repo_paths(text) == ["tests/test_export.py"]
