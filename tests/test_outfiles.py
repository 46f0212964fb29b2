"""The one output mechanism of every command (``portraitseg.outfiles``): an output is never an
input or another output (symbolic links, hard links and ``..`` resolved), never an existing file
without ``overwrite``, and its folder must exist (or be creatable) and be writable, all checked
before any work; results are written atomically and an earlier result is never replaced
silently. Read-only folders are real read-only tmpfs mounts (tests/small_disk.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from portraitseg.outfiles import (
    OutputClaims,
    OutputError,
    OutputExistsError,
    WriteError,
    check_folder,
    check_outputs,
    plan_writes,
    same_file,
    write_results,
)


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
    ({"OUT": "sub/o.mp4", "--json": "linkdir/o.mp4"},
     "--json {d}/linkdir/o.mp4 is also OUT {d}/sub/o.mp4; give them different names"),
    ({"OUT": "sub"}, "OUT {d}/sub is a folder; give a file name"),
])
def test_inputs_and_other_outputs_are_refused_even_with_overwrite(files: Path, outputs, message) -> None:
    with pytest.raises(OutputError) as exc:
        check_outputs({k: files / v for k, v in outputs.items()}, {"IN": files / "in.mp4"}, overwrite=True)
    assert str(exc.value).startswith(message.format(d=files))
    assert (files / "in.mp4").read_bytes() == b"input"


def test_an_input_given_twice_is_named_as_first_given(files: Path) -> None:
    """IN (a hard link) and --background (the file itself) are one file: the message names IN,
    whichever way the output reaches it (it depended on set order: a flaky video test)."""
    inputs = {"IN": files / "hard.mp4", "--background": files / "in.mp4"}
    for out in ("in.mp4", "sym.mp4", "hard.mp4"):
        with pytest.raises(OutputError, match=r"^--json .* is the input IN \("):
            check_outputs({"--json": files / out}, inputs)


def test_existing_outputs_need_overwrite_and_folders_must_exist_unless_created(files: Path) -> None:
    (files / "old.mp4").write_bytes(b"earlier")
    with pytest.raises(OutputExistsError, match=r"^OUT .*old.mp4 exists \(use --overwrite to replace it\)$"):
        check_outputs({"OUT": files / "old.mp4"}, {}, overwrite=False)
    (files / "dangling.mp4").symlink_to(files / "gone.mp4")  # a link is an existing name too
    with pytest.raises(OutputExistsError, match="dangling.mp4 exists"):
        check_outputs({"OUT": files / "dangling.mp4"})
    check_outputs({"OUT": files / "old.mp4", "--json": None}, {"--background": None}, overwrite=True)
    with pytest.raises(OutputError, match=r"^OUT .*o.mp4: output folder .*nowhere/deeper does not exist$"):
        check_outputs({"OUT": files / "nowhere" / "deeper" / "o.mp4"})
    check_outputs({"OUT": files / "nowhere" / "deeper" / "o.mp4"}, make_folders=True)
    assert not (files / "nowhere").exists()  # only checked, nothing created
    (files / "afile").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"^--json .*afile/r.json: .*afile is a file, not a folder$"):
        check_outputs([("--json", files / "afile" / "r.json")], make_folders=True)
    assert not list(files.rglob(".portraitseg-probe-*"))  # the writability probe cleans up


def test_repeated_labels_and_a_clash_between_them(files: Path) -> None:
    """Pairs, not a mapping: several models or report files share a label."""
    reports = [("--out", files / "rep" / "a.md"), ("--out", files / "rep" / "b.md")]
    check_outputs(reports, [("MODEL", files / "in.mp4"), ("MODEL", files / "sym.mp4")], make_folders=True)
    with pytest.raises(OutputError, match=r"--json .*rep/../rep/b.md is also --out .*rep/b.md"):
        check_outputs([*reports, ("--json", files / "rep" / ".." / "rep" / "b.md")], make_folders=True)


def test_read_only_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        for make in (False, True):
            with pytest.raises(OutputError) as exc:
                check_outputs({"OUT": ro / "o.mp4"}, make_folders=make)
            assert str(exc.value) == f"OUT {ro / 'o.mp4'}: cannot write in {ro}: Read-only file system"
        with pytest.raises(OutputError, match=f"^-o {ro}/a/b: cannot write in {ro}: Read-only file system$"):
            check_folder(f"-o {ro / 'a' / 'b'}", ro / "a" / "b", make_folders=True)


def test_claims_per_input_refuse_hard_links_and_shared_names(files: Path) -> None:
    """predict/bulk: outputs claimed image by image against every input, in O(1) per file."""
    claims = OutputClaims()
    claims.add_inputs([("INPUT", files / "in.mp4"), ("INPUT", files / "sub"), ("INPUT", None)])
    claims.claim([("output", files / "a.png"), ("output", files / "b.png")], owner="the output of x.jpg")
    with pytest.raises(OutputError, match=r"output .*hard.mp4 is the input INPUT \(.*in.mp4\)"):
        claims.claim([("output", files / "c.png"), ("output", files / "hard.mp4")])
    claims.claim([("output", files / "c.png")])  # not claimed by the refused call above
    with pytest.raises(OutputError, match=r"^output .*linkdir/../b.png is also the output of x.jpg; give"):
        claims.claim([("output", files / "linkdir" / ".." / "b.png")])
    with pytest.raises(OutputError, match="is also the output of y.jpg"):  # within one call too
        claims.claim([("output", files / "d.png"), ("output", files / "sub" / ".." / "d.png")],
                     owner="the output of y.jpg")


def test_the_rule_when_writing(tmp_path: Path) -> None:
    a, b = tmp_path / "w" / "a.txt", tmp_path / "w" / "b.txt"
    assert write_results({a: b"1", b: b"2"}, overwrite=False).todo.keys() == {a, b}
    assert write_results({a: b"1"}, overwrite=False).unchanged == [a]
    refused = r"^output .*b.txt exists with different content \(use --overwrite to replace it\)$"
    with pytest.raises(OutputExistsError, match=refused):
        write_results({a: b"1", b: b"22"}, overwrite=False)  # another size: refused without reading it
    assert b.read_bytes() == b"2"
    assert plan_writes({b: b"3"}, overwrite=True).todo == {b: b"3"}
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_folder_or_file_in_the_way_is_named(tmp_path: Path) -> None:
    # A folder named like the output was 'exists with different content (use --overwrite ...)',
    # and with --overwrite 'cannot write (Is a directory)'; a file where the output's folder goes
    # was 'cannot write (File exists)'.
    folder = tmp_path / "x.mask.png"
    folder.mkdir()
    for overwrite in (False, True):
        with pytest.raises(OutputError, match=r"^output .*x.mask.png is a folder; move it away or give "
                                              r"another output folder$"):
            write_results({folder: b"1"}, overwrite=overwrite)
    (tmp_path / "sub").write_text("a file")
    with pytest.raises(WriteError, match=rf"^{tmp_path}/sub/y.png: cannot write \({tmp_path}/sub is a file, "
                                         r"not a folder\)$"):
        write_results({tmp_path / "sub" / "y.png": b"1"}, overwrite=False)
    assert folder.is_dir() and (tmp_path / "sub").read_text() == "a file"
