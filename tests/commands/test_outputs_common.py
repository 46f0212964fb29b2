"""The shared output checks of the commands (``commands._common``): an output is never an input
(links resolved), never another output, never an existing file without --overwrite; and
SIGTERM's exit code survives a C extension wrapping it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from portraitseg.commands._common import check_outputs, same_file, sigterm_as_exit


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "in.mp4").write_bytes(b"input")
    (tmp_path / "sub").mkdir()
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    (tmp_path / "sym.mp4").symlink_to(tmp_path / "in.mp4")
    os.link(tmp_path / "in.mp4", tmp_path / "hard.mp4")
    return tmp_path


def test_same_file_sees_through_links_and_dots(files: Path) -> None:
    assert same_file(files / "sym.mp4", files / "in.mp4")
    assert same_file(files / "hard.mp4", files / "in.mp4")
    assert same_file(files / "sub" / ".." / "in.mp4", files / "in.mp4")
    assert same_file(files / "linkdir" / "new.mp4", files / "sub" / "new.mp4")  # neither exists yet
    assert not same_file(files / "sub" / "in.mp4", files / "in.mp4")


@pytest.mark.parametrize(("outputs", "message"), [
    ({"OUT": "sym.mp4"}, "OUT {d}/sym.mp4 is the input IN ({d}/in.mp4); refusing to overwrite it"),
    ({"OUT": "hard.mp4"}, "OUT {d}/hard.mp4 is the input IN"),
    ({"OUT": "o.mp4", "--json": "linkdir/../in.mp4"}, "--json {d}/linkdir/../in.mp4 is the input IN"),
    ({"OUT": "sub/o.mp4", "--json": "linkdir/o.mp4"}, "--json {d}/linkdir/o.mp4 is also OUT"),
    ({"OUT": "sub"}, "OUT {d}/sub is a folder"),
])
def test_inputs_and_other_outputs_are_refused_even_with_overwrite(files: Path, outputs, message) -> None:
    with pytest.raises(ValueError) as exc:
        check_outputs({k: files / v for k, v in outputs.items()}, {"IN": files / "in.mp4"}, overwrite=True)
    assert message.format(d=files) in str(exc.value)
    assert (files / "in.mp4").read_bytes() == b"input"


def test_existing_outputs_need_overwrite_and_folders_must_exist(files: Path) -> None:
    (files / "old.mp4").write_bytes(b"earlier")
    with pytest.raises(ValueError, match=r"OUT .*old.mp4 exists \(use --overwrite to replace it\)"):
        check_outputs({"OUT": files / "old.mp4"}, {}, overwrite=False)
    check_outputs({"OUT": files / "old.mp4", "--json": None}, {"--background": None}, overwrite=True)
    with pytest.raises(FileNotFoundError, match="output folder .*nowhere does not exist"):
        check_outputs({"OUT": files / "nowhere" / "o.mp4"}, {}, overwrite=False)
    assert not list(files.glob(".portraitseg-probe-*"))  # the writability probe cleans up


def test_sigterm_exit_code_survives_an_exception_that_wraps_it() -> None:
    """SIGTERM during a C extension's import surfaces as ImportError; the command must still
    exit 143 (it printed a traceback and exited 1)."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc:
        with sigterm_as_exit():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except SystemExit as inner:
                raise ImportError("initialization failed") from inner
    assert exc.value.code == 143
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
