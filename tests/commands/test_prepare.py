"""``portraitseg prepare``: 3 real ccp_person pairs x 3 real textures -> a composited dataset."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from portraitseg.cli import main
from portraitseg.data import FolderDataset, read_gray, read_rgb
from portraitseg.prepare import composite_one, cover_resize

JPEG_TOL = 4.0  # mean abs difference that JPEG q95 re-encoding may introduce


@pytest.fixture
def textures(shared_data: Path, tmp_path: Path) -> Path:
    src = sorted((shared_data / "backgrounds" / "textures").rglob("*.jpg"))[:3]
    assert len(src) == 3
    dst = tmp_path / "textures"
    dst.mkdir()
    for f in src:
        shutil.copy2(f, dst / f.name)
    return dst


def run_prepare(ccp3: Path, textures: Path, out: Path, *extra: str) -> int:
    args = ["prepare", str(out), "--data", f"{ccp3}:train.txt", "--backgrounds", str(textures)]
    return main([*args, "--per-image", "2", "--seed", "1", "--quiet", *extra])


def test_prepare_writes_a_readable_composited_dataset(ccp3: Path, textures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_prepare(ccp3, textures, out) == 0
    stems = (out / "train.txt").read_text().split()
    assert len(stems) == 6  # 3 samples x 2 backgrounds
    ds = FolderDataset(out, "train.txt")
    assert ds.soft and len(list(ds)) == 6
    with (out / "manifest.csv").open() as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert set(rows) == set(stems)
    for stem in stems:
        row = rows[stem]
        source = read_rgb(ccp3 / "images" / f"{row['stem']}.jpg")
        alpha = read_gray(out / "alpha" / f"{stem}.png")
        # The alpha is the source mask, unchanged.
        np.testing.assert_array_equal(alpha, read_gray(ccp3 / "masks" / f"{row['stem']}.png"))
        result = read_rgb(out / "images" / f"{stem}.jpg").astype(np.float32)
        person, background = alpha == 255, alpha == 0
        assert person.sum() > 100 and background.sum() > 100
        # Person pixels are the source photo's (up to JPEG re-encoding).
        assert np.abs(result[person] - source[person]).mean() < JPEG_TOL
        # Background pixels are the recorded crop of the recorded texture, not the source photo.
        bg = cover_resize(read_rgb(row["background"]), *source.shape[:2])
        assert bg.shape[:2] == (int(row["bg_height"]), int(row["bg_width"]))
        y0, x0 = int(row["y0"]), int(row["x0"])
        crop = bg[y0 : y0 + source.shape[0], x0 : x0 + source.shape[1]].astype(np.float32)
        assert np.abs(result[background] - crop[background]).mean() < JPEG_TOL
        assert np.abs(result[background] - source[background]).mean() > 5 * JPEG_TOL
        assert Path(row["background"]).parent == textures


def test_composite_is_exact_where_alpha_is_0_or_1_and_mixes_between() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    bg = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    alpha = np.zeros((8, 8), np.float32)
    alpha[:4] = 1.0
    alpha[4] = 0.5
    out = composite_one(image, alpha, bg)
    np.testing.assert_array_equal(out[:4], image[:4])
    np.testing.assert_array_equal(out[5:], bg[5:])
    mid = (image[4].astype(np.float32) + bg[4]) / 2
    assert np.abs(out[4] - mid).max() <= 1


def test_cover_resize_covers_and_keeps_aspect() -> None:
    bg = np.zeros((100, 200, 3), np.uint8)
    out = cover_resize(bg, 300, 120)  # tall target: height decides the scale
    assert out.shape[:2] == (300, 600)
    out = cover_resize(bg, 40, 160)  # shrink: width decides
    assert out.shape[0] >= 40 and out.shape[1] == 160


def test_same_seed_same_output_and_portrait_crops(ccp3: Path, textures: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_prepare(ccp3, textures, a, "--portrait-crops") == 0
    assert run_prepare(ccp3, textures, b, "--portrait-crops") == 0
    assert (a / "manifest.csv").read_text() == (b / "manifest.csv").read_text()
    stems = (a / "train.txt").read_text().split()
    crops = [s for s in stems if s.endswith("_crop")]
    assert crops, "ccp_person shows full bodies: every composite should yield a portrait crop"
    for stem in crops:
        full = read_gray(a / "alpha" / f"{stem.removesuffix('_crop')}.png")
        crop = read_gray(a / "alpha" / f"{stem}.png")
        assert crop.shape[0] == crop.shape[1] < min(full.shape)
        assert (crop > 127).mean() > 0.1  # the crop shows the person, not empty background
    assert len(list(FolderDataset(a, "train.txt"))) == len(stems)


def test_bad_files_are_reported_and_skipped_with_exit_1(
    ccp3: Path, textures: Path, tmp_path: Path, capsys
) -> None:
    bad_image = ccp3 / "images" / f"{(ccp3 / 'train.txt').read_text().split()[0]}.jpg"
    bad_image.write_bytes(b"not a jpeg")
    (textures / "broken.jpg").write_bytes(b"")
    out = tmp_path / "out"
    assert main(["prepare", str(out), "--data", f"{ccp3}:train.txt", "--backgrounds", str(textures),
                 "--per-image", "4", "--quiet"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert str(bad_image) in err
    assert err.count("broken.jpg") == 1  # one bad background is reported once, however often drawn
    # The two good samples were still written.
    written = (out / "train.txt").read_text().split()
    assert written and all(bad_image.stem not in s for s in written)
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries


def test_refuses_an_existing_dataset_or_an_input(ccp3: Path, textures: Path, tmp_path: Path, capsys) -> None:
    before = {p: p.read_bytes() for p in ccp3.rglob("*") if p.is_file()}
    assert run_prepare(ccp3, textures, ccp3) == 2  # output = the input dataset
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{ccp3}: output folder is (or contains, or lies inside) the input" in err
    out = tmp_path / "out"
    assert run_prepare(ccp3, textures, out) == 0
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_prepare(ccp3, textures, out) == 2  # an earlier result is never rewritten
    assert f"{out}: output folder exists and is not empty" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written
    assert {p: p.read_bytes() for p in ccp3.rglob("*") if p.is_file()} == before
    assert not (ccp3 / "alpha").exists()


def test_bomb_background_and_every_sample_bad(ccp3: Path, textures: Path, tmp_path: Path, capsys) -> None:
    from imagebombs import png_bomb

    png_bomb(textures / "bomb.png")
    assert run_prepare(ccp3, textures, tmp_path / "a", "--per-image", "4") == 1
    err = capsys.readouterr().err
    assert err.count(f"{textures / 'bomb.png'}: image is") == 1 and "Traceback" not in err
    assert run_prepare(ccp3, textures, tmp_path / "b", "--max-pixels", "100") == 2
    err = capsys.readouterr().err
    assert err.count("skipped: ") >= 3 and "over the limit of 100" in err
    assert "no readable samples to composite" in err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- issue 17: unwritable output


def test_read_only_output_is_one_line_before_compositing(ccp3: Path, textures: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert run_prepare(ccp3, textures, ro / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write in" in err and "Traceback" not in err


def test_full_disk_is_one_line(ccp3: Path, textures: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture) -> None:
    """A real 64 KB tmpfs fills up after a few composites: one line naming the file, exit 2."""
    from small_disk import tmpfs

    with tmpfs(tmp_path / "disk", "64k") as disk:
        assert run_prepare(ccp3, textures, disk / "out") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write (No space left on device)" in err
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]
