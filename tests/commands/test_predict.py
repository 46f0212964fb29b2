"""``portraitseg predict`` end to end on real photos copied into tmp (nothing is committed)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from portraitseg.cli import main

STEMS = ("vikram_001", "vikram_003")  # landscape and portrait


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def inputs(shared_data: Path, tmp_path: Path) -> Path:
    """in/vikram_001.jpg, in/sub/vikram_003.jpg and in/sub/corrupt.jpg."""
    src = shared_data / "vikram_val" / "images"
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy2(src / f"{STEMS[0]}.jpg", folder)
    shutil.copy2(src / f"{STEMS[1]}.jpg", folder / "sub")
    (folder / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated JPEG")
    return folder


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_folder_all_outputs_and_one_bad_file(inputs: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    before = digest(inputs)
    out = tmp_path / "out"
    args = ["predict", str(inputs), "-o", str(out), "--no-progress", "--background", "#3366ff"]
    for kind in ("mask", "cutout", "composite", "grid"):
        args += ["--output", kind]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "corrupt.jpg: not a readable image" in err
    assert "2 image(s) done, 1 failed" in err
    assert digest(inputs) == before  # inputs untouched

    for stem, rel in ((STEMS[0], Path()), (STEMS[1], Path("sub"))):
        w, h = size_of(inputs / rel / f"{stem}.jpg")
        folder = out / rel  # folder structure preserved
        with Image.open(folder / f"{stem}.mask.png") as m:
            assert m.size == (w, h) and m.mode == "L"
        with Image.open(folder / f"{stem}.cutout.png") as c:
            assert c.size == (w, h) and c.mode == "RGBA"
            assert np.asarray(c)[..., 3].max() == 255
        with Image.open(folder / f"{stem}.composite.jpg") as c:
            assert c.size == (w, h) and c.mode == "RGB"
        assert size_of(folder / f"{stem}.grid.jpg") == (3 * w, h)
    assert not list(out.rglob("corrupt*")) and not list(out.rglob(".*.tmp"))


def test_no_overwrite_without_flag(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = inputs / f"{STEMS[0]}.jpg"
    out = tmp_path / "out"
    existing = out / f"{STEMS[0]}.mask.png"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"keep me")
    assert main(["predict", str(photo), "-o", str(out), "--no-progress"]) == 1
    assert "exists with different content (use --overwrite to replace it)" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert main(["predict", str(photo), "-o", str(out), "--no-progress", "--overwrite"]) == 0
    assert size_of(existing) == size_of(photo)


def test_never_writes_over_an_input(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An input named like an output of another input, in the output folder itself.
    photo = inputs / f"{STEMS[0]}.jpg"
    clash = inputs / f"{STEMS[0]}.mask.png"
    Image.open(photo).save(clash)
    before = digest(inputs)
    code = main(["predict", str(photo), str(clash), "-o", str(inputs), "--no-progress", "--overwrite"])
    assert code == 1
    assert f"is the input INPUT ({clash})" in capsys.readouterr().err
    after = digest(inputs)
    assert {k: after[k] for k in before} == before


def test_an_output_hard_linked_to_an_input_is_refused(inputs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Predict compared resolved paths only: an output name hard-linked to another input was
    replaced under --overwrite. The shared check (outfiles.OutputClaims) compares inodes too."""
    photo, other = inputs / f"{STEMS[0]}.jpg", inputs / "sub" / f"{STEMS[1]}.jpg"
    out = tmp_path / "out"
    out.mkdir()
    link = out / f"{STEMS[0]}.mask.png"
    os.link(other, link)
    code = main(["predict", str(photo), str(other), "-o", str(out), "--no-progress", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1 and "1 image(s) done, 1 failed" in err  # the batch goes on past the refused image
    assert f"{photo}: output {link} is the input INPUT ({other}); refusing to overwrite it" in err
    assert os.path.samefile(link, other)  # never replaced


def test_read_only_outdir_is_one_line_before_any_work(inputs: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction: a read-only -o loaded the model and segmented every image, then printed one
    '[Errno 30] Read-only file system' line per image."""
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        out = ro / "out"
        assert main(["predict", str(inputs), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"portraitseg predict: error: -o {out}: cannot write in {ro}: Read-only file system"


def test_glob_and_missing_input(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(inputs / "*.jpg"), str(tmp_path / "nope.jpg"), "-o", str(out),
                 "--no-progress",
                 "--no-guided", "--smoothstep", "0.3", "0.7"])
    assert code == 1
    assert "nope.jpg: no such file or folder" in capsys.readouterr().err
    assert (out / f"{STEMS[0]}.mask.png").is_file()
