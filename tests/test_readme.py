"""The README's commands as a new user meets them (issue 11): the first command can be run
twice, and the command table lists every command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import REPO
from portraitseg.cli import COMMANDS, main

README = REPO / "README.md"


def first_predict_command() -> list[str]:
    """The ``portraitseg predict ...`` part of the first line of the README's first bash block
    (the pip install before it is not re-run here)."""
    block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert block, "README has no bash block"
    first = block.group(1).splitlines()[0]
    words = shlex.split(first[first.index("portraitseg predict"):])
    return words[1:]  # without the program name


def outputs(folder: Path) -> dict[str, bytes]:
    """The visible files (not predict's hidden record of finished work)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_readme_first_command_runs_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # The repository's files at the working directory (through a link: nothing is written there).
    (tmp_path / "src").symlink_to(REPO / "src", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    args = [*first_predict_command(), "--no-progress"]
    assert main(args) == 0
    written = outputs(tmp_path / "out")
    assert set(written) == {"astronaut.mask.png", "astronaut.composite.jpg", "astronaut.grid.jpg"}
    capsys.readouterr()
    assert main(args) == 0
    assert "3 already up to date (1 not recomputed)" in capsys.readouterr().err
    assert outputs(tmp_path / "out") == written


def test_readme_command_table_lists_every_command() -> None:
    table = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `portraitseg (\w+)", table, flags=re.M))
    assert listed == set(COMMANDS)


def cache_commands(text: str) -> dict[str, list[str]]:
    """``portraitseg cache OUT ...`` commands by OUT, as argument lists (continuations joined)."""
    text = re.sub(r"\\\n[#\s]*", " ", text)
    found = {}
    for line in re.findall(r"portraitseg cache \.carry/[^\n`]*", text):  # not the table's OUT.npz
        words = shlex.split(line.split("#", 1)[0])
        found[words[2]] = words[3:]
    return found


def test_readme_builds_the_caches_configs_default_yaml_names() -> None:
    """The README's training caches are the ones configs/default.yaml (the bundled model's run
    file) says it was trained from: the README had kept an earlier stage's data mix."""
    readme = README.read_text().replace("$D/", "../shared/data/")
    config = (REPO / "configs" / "default.yaml").read_text()
    ours, theirs = cache_commands(readme), cache_commands(config)
    assert set(ours) == set(theirs) == {".carry/train224.npz", ".carry/val224.npz", ".carry/bg224.npz"}
    for out in ours:
        assert ours[out] == theirs[out], out
