"""Training cache: build -> load round trip, image caches, concat, errors, and the CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_datasets import synthetic_alpha_set  # tests/data is on sys.path (rootdir import mode)

from portraitseg.cli import main
from portraitseg.data import DataError, FolderDataset
from portraitseg.data.cache import build_cache, build_image_cache, concat_caches, load_cache

SIZE = 32


def test_round_trip_masks_and_soft_alpha(ccp3: Path, tmp_path: Path) -> None:
    soft = synthetic_alpha_set(tmp_path / "soft", n=2, size=(SIZE, SIZE))  # no resize: exact values
    path, skipped = build_cache([(ccp3, "train.txt"), (soft, None)], tmp_path / "c.npz", SIZE, 90)
    assert skipped == []
    c = load_cache(path, workers=1)
    assert len(c) == 5 and c.size == SIZE
    assert c.images.shape == (5, SIZE, SIZE, 3) and c.images.dtype == np.uint8
    assert c.targets.shape == (5, SIZE, SIZE) and c.targets.dtype == np.uint8
    assert c.ignore.shape == (5, SIZE, SIZE) and set(np.unique(c.ignore)) <= {0, 1}
    assert c.source_names == ["ccp3", "soft"]
    assert c.source.tolist() == [0, 0, 0, 1, 1]
    assert c.names == [*FolderDataset(ccp3, "train.txt").stems, "s0", "s1"]
    # Soft alpha survives exactly: targets are lossless WebP.
    ramp = np.tile(np.linspace(0, 255, SIZE).round().astype(np.uint8), (SIZE, 1))
    np.testing.assert_array_equal(c.targets[3], ramp)
    np.testing.assert_array_equal(c.ignore[3, :4], 1)
    assert c.ignore[3, 4:].sum() == 0 and c.ignore[4].sum() == 0
    # Hand masks stay (almost) binary after the area resize; only edge pixels turn soft.
    for i, stem in enumerate(c.names[:3]):
        mask = cv2.imread(str(ccp3 / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        expected = cv2.resize((mask >= 128).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        assert np.abs(c.targets[i] / 255.0 - expected).max() <= 1 / 255 + 1e-6
        # Images are lossy WebP: close, not exact.
        image = cv2.cvtColor(cv2.imread(str(ccp3 / "images" / f"{stem}.jpg")), cv2.COLOR_BGR2RGB)
        small = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)
        assert np.abs(c.images[i] - small).mean() < 6


def test_image_cache_has_no_targets(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tex"
    folder.mkdir()
    for f in sorted((shared_data / "backgrounds" / "textures").rglob("*.jpg"))[:3]:
        shutil.copy2(f, folder / f.name)
    c = load_cache(build_image_cache(folder, tmp_path / "bg.npz", SIZE), workers=1)
    assert c.images.shape == (3, SIZE, SIZE, 3)
    assert c.targets is None and c.ignore is None
    assert c.names == sorted(p.stem for p in folder.iterdir())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        build_image_cache(tmp_path / "empty", tmp_path / "x.npz", SIZE)


def test_concat_renumbers_sources_and_checks_sizes(tmp_path: Path) -> None:
    a = synthetic_alpha_set(tmp_path / "a", n=2, size=(SIZE, SIZE))
    b = synthetic_alpha_set(tmp_path / "b", n=3, size=(SIZE, SIZE))
    ca = load_cache(build_cache([(a, None)], tmp_path / "a.npz", SIZE)[0], workers=1)
    cb = load_cache(build_cache([(b, None)], tmp_path / "b.npz", SIZE)[0], workers=1)
    joined = concat_caches([ca, cb])
    assert len(joined) == 5
    assert joined.source_names == ["a", "b"]
    assert joined.source.tolist() == [0, 0, 1, 1, 1]
    np.testing.assert_array_equal(joined.targets[2:], cb.targets)
    other = load_cache(build_cache([(a, None)], tmp_path / "o.npz", 16)[0], workers=1)
    with pytest.raises(DataError, match="different sizes"):
        concat_caches([ca, other])


def test_bad_paths_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing.npz: cache file not found"):
        load_cache(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz: not a portraitseg cache"):
        load_cache(junk)
    with pytest.raises(DataError, match="dataset folder not found"):
        build_cache([(tmp_path / "nope", None)], tmp_path / "c.npz", SIZE)


def test_cli_skip_bad_reports_the_file_and_exits_1(ccp3: Path, tmp_path: Path, capsys) -> None:
    stem = FolderDataset(ccp3, "train.txt").stems[1]
    bad = ccp3 / "images" / f"{stem}.jpg"
    bad.write_bytes(b"garbage")
    out = tmp_path / "c.npz"
    assert main(["cache", str(out), "--data", f"{ccp3}:train.txt", "--size", str(SIZE), "--skip-bad"]) == 1
    err = capsys.readouterr().err
    assert f"skipped: {bad}: not a readable image" in err and "1 file(s) skipped" in err
    c = load_cache(out, workers=1)
    assert len(c) == 2 and stem not in c.names
    # Without --skip-bad the same data is a hard error (exit 2) naming the file.
    assert main(["cache", str(tmp_path / "d.npz"), "--data", f"{ccp3}:train.txt", "--size", str(SIZE)]) == 2
    assert str(bad) in capsys.readouterr().err
    assert not (tmp_path / "d.npz").exists()


def test_images_skip_bad_and_bomb(tmp_path: Path, capsys) -> None:
    from imagebombs import png_bomb

    folder = tmp_path / "bg"
    folder.mkdir()
    cv2.imwrite(str(folder / "good.png"), np.full((40, 30, 3), 90, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    png_bomb(folder / "bomb.png")
    out = tmp_path / "bg.npz"
    assert main(["cache", str(out), "--images", str(folder), "--size", str(SIZE)]) == 2
    assert not out.exists()
    assert main(["cache", str(out), "--images", str(folder), "--size", str(SIZE), "--skip-bad"]) == 1
    err = capsys.readouterr().err
    assert "skipped: " + str(folder / "broken.jpg") in err and f"{folder / 'bomb.png'}: image is" in err
    assert "2 file(s) skipped" in err
    assert len(load_cache(out, workers=1).images) == 1


def test_every_sample_bad_lists_the_reasons(ccp3: Path, tmp_path: Path, capsys) -> None:
    code = main(["cache", str(tmp_path / "c.npz"), "--data", f"{ccp3}:train.txt", "--size", str(SIZE),
                 "--skip-bad", "--max-pixels", "100"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("skipped: ") == 3 and "over the limit of 100 (--max-pixels)" in err
    assert "no readable samples to cache" in err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- issue 17: damaged caches, writes


def _damaged_copies(good: Path, folder: Path) -> dict[str, Path]:
    """A truncated file (BadZipFile), one with flipped bytes (bad CRC, read lazily by np.load) and
    a well-formed zip whose image bytes are garbage (cv2.imdecode -> None: 'NoneType'.ndim)."""
    raw = good.read_bytes()
    (folder / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    for i in range(len(raw) // 3, len(raw) // 3 + 256):
        flipped[i] ^= 0x5A
    (folder / "flipped.npz").write_bytes(bytes(flipped))
    arrays = dict(np.load(good))
    image_bytes = arrays["image_bytes"].copy()
    start = int(arrays["image_offsets"][1])
    image_bytes[start : start + 64] = 7
    np.savez(folder / "garbage.npz", **{**arrays, "image_bytes": image_bytes})
    return {name: folder / f"{name}.npz" for name in ("truncated", "flipped", "garbage")}


def test_damaged_caches_are_one_line_errors(ccp3: Path, tmp_path: Path, capsys) -> None:
    good, _ = build_cache([(ccp3, "train.txt")], tmp_path / "good.npz", SIZE)
    capsys.readouterr()  # build_cache's progress bars
    for name, path in _damaged_copies(good, tmp_path).items():
        with pytest.raises(DataError, match=f"{name}.npz: .*rebuild it") as info:
            load_cache(path, workers=1, progress=False)
        assert "\n" not in str(info.value), name
        # ... and through `train`, before any epoch runs
        code = main(["train", "--train-cache", str(path), "--out-dir", str(tmp_path / "runs"),
                     "--device", "cpu", "--input-size", str(SIZE), "--progress", "false", "--workers", "1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and f"{name}.npz" in err, err


def test_bad_size_or_quality_is_refused_before_reading(tmp_path: Path, capsys) -> None:
    for flag, value, message in (("--size", "0", "--size must be a whole number >= 1; got 0"),
                                 # was a traceback: OpenCV failed to allocate 30 GB per image
                                 ("--size", "100000", "--size must be at most 16383 (the cache stores WebP "
                                  "images); got 100000"),
                                 ("--quality", "101", "--quality must be a whole number in [0, 100]")):
        argv = ["cache", str(tmp_path / "c.npz"), "--images", str(tmp_path / "missing"), flag, value]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1


def test_full_disk_is_one_line_and_leaves_no_temporary(ccp3: Path, tmp_path: Path, capsys) -> None:
    """A real tiny tmpfs: np.savez left a 2 MB '.c.npz.tmp.npz' and a traceback."""
    from small_disk import tmpfs

    with tmpfs(tmp_path / "disk", "16k") as disk:
        assert main(["cache", str(disk / "c.npz"), "--data", f"{ccp3}:train.txt", "--size", "224"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.endswith("c.npz: cannot write (No space left on device)")
        assert list(disk.iterdir()) == []


def test_unwritable_output_fails_before_decoding(ccp3: Path, tmp_path: Path, capsys) -> None:
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(["cache", str(ro / "c.npz"), "--data", f"{ccp3}:train.txt", "--size", str(SIZE)]) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "cache " in err and "%|" not in err  # no sample was decoded


def test_loading_bars_can_be_silenced(ccp3: Path, tmp_path: Path, capsys) -> None:
    path, _ = build_cache([(ccp3, "train.txt")], tmp_path / "c.npz", SIZE)
    capsys.readouterr()
    load_cache(path, workers=1, progress=False)
    assert capsys.readouterr().err == ""
    load_cache(path, workers=1)
    assert "c.npz images" in capsys.readouterr().err


def test_an_existing_cache_is_refused_without_overwrite(ccp3: Path, tmp_path: Path, capsys) -> None:
    """Reproduction: `portraitseg cache OUT` run twice replaced the first OUT silently (exit 0)."""
    out = tmp_path / "c.npz"
    args = ["cache", str(out), "--data", f"{ccp3}:train.txt", "--size", str(SIZE)]
    assert main(args) == 0
    first = out.read_bytes()
    capsys.readouterr()
    assert main([*args[:-1], "64"]) == 2  # another size: a different cache
    err = capsys.readouterr().err.strip()
    assert err == f"portraitseg cache: error: cache {out} exists (use --overwrite to replace it)"
    assert out.read_bytes() == first  # refused before decoding (no bar), earlier file intact
    assert main([*args[:-1], "64", "--overwrite"]) == 0
    assert load_cache(out, workers=1).size == 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "ccp3"]  # no temporary left


def test_a_split_file_is_never_the_output(ccp3: Path, capsys) -> None:
    """Reproduction: `cache ROOT/train.txt --data ROOT:train.txt` replaced the split file with the
    .npz (an input is refused even with --overwrite)."""
    split = ccp3 / "train.txt"
    before = split.read_bytes()
    assert main(["cache", str(split), "--data", f"{ccp3}:train.txt", "--size", str(SIZE), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"portraitseg cache: error: cache {split} is the input --data ({split}); "
                   "refusing to overwrite it")
    assert split.read_bytes() == before
