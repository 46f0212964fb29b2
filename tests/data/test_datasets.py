"""Dataset readers: folder layouts (masks/alpha/ignore), splits, .npy arrays, file-naming errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from portraitseg.data import DataError, FolderDataset, NpyDataset, open_dataset, read_gray, read_rgb


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def synthetic_alpha_set(root: Path, n: int = 2, size: tuple[int, int] = (24, 32)) -> Path:
    """``n`` images with a horizontal soft alpha ramp 0..255 and an ignore map on one of them."""
    h, w = size
    ramp = np.tile(np.linspace(0, 255, w).round().astype(np.uint8), (h, 1))
    for i in range(n):
        write_png(root / "images" / f"s{i}.png", np.full((h, w, 3), 40 * i, np.uint8))
        write_png(root / "alpha" / f"s{i}.png", ramp)
    ignore = np.zeros((h, w), np.uint8)
    ignore[:4] = 255
    write_png(root / "ignore" / "s0.png", ignore)
    return root


def test_real_masks_are_binary_and_match_the_files(ccp3: Path) -> None:
    ds = FolderDataset(ccp3, "train.txt")
    assert len(ds) == 3 and not ds.soft and ds.name == "ccp3"
    for sample, stem in zip(ds, ds.stems):
        assert sample.name == stem
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
        assert sample.target.dtype == np.float32 and sample.target.shape == sample.image.shape[:2]
        assert set(np.unique(sample.target)) <= {0.0, 1.0}
        assert 0.05 < sample.target.mean() < 0.95  # a person and some background
        mask = read_gray(ccp3 / "masks" / f"{stem}.png")
        np.testing.assert_array_equal(sample.target, (mask >= 128).astype(np.float32))
        np.testing.assert_array_equal(sample.image, read_rgb(ccp3 / "images" / f"{stem}.jpg"))
        assert not sample.ignore.any()


def test_alpha_targets_stay_soft_and_ignore_is_read(tmp_path: Path) -> None:
    ds = FolderDataset(synthetic_alpha_set(tmp_path / "a"))
    assert ds.soft and ds.stems == ["s0", "s1"]
    s0, s1 = ds[0], ds[1]
    assert s0.soft
    np.testing.assert_allclose(s0.target[0], np.linspace(0, 255, 32).round() / 255, atol=1e-6)
    assert ((s0.target > 0) & (s0.target < 1)).mean() > 0.9  # soft values are kept, not thresholded
    assert s0.ignore[:4].all() and not s0.ignore[4:].any()
    assert not s1.ignore.any()  # no ignore file for s1: nothing ignored


def test_split_file_selects_and_orders(tmp_path: Path) -> None:
    root = synthetic_alpha_set(tmp_path / "a", n=3)
    (root / "val.txt").write_text("s2\n\ns0\n")
    assert FolderDataset(root, "val.txt").stems == ["s2", "s0"]  # relative to root
    assert FolderDataset(root, root / "val.txt").stems == ["s2", "s0"]  # or absolute
    assert open_dataset(root, "val.txt")[0].name == "s2"
    with pytest.raises(DataError, match="missing.txt: split file not found"):
        FolderDataset(root, "missing.txt")
    (root / "bad.txt").write_text("nope\n")
    with pytest.raises(DataError, match="nope.*missing"):
        FolderDataset(root, "bad.txt")[0]


def test_folder_without_targets_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x" / "images").mkdir(parents=True)
    with pytest.raises(DataError, match="neither masks/ nor alpha/"):
        FolderDataset(tmp_path / "x")
    with pytest.raises(DataError, match="dataset folder not found"):
        FolderDataset(tmp_path / "nope")


def test_corrupt_image_names_the_file(ccp3: Path) -> None:
    stem = FolderDataset(ccp3, "train.txt").stems[1]
    bad = ccp3 / "images" / f"{stem}.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    ds = FolderDataset(ccp3, "train.txt")
    with pytest.raises(DataError, match=f"^{bad}: not a readable image"):
        ds[1]
    with pytest.raises(DataError):
        list(ds)


def test_mask_of_wrong_size_names_the_mask_file(ccp3: Path) -> None:
    stem = FolderDataset(ccp3, "train.txt").stems[0]
    mask_path = ccp3 / "masks" / f"{stem}.png"
    mask = read_gray(mask_path)
    write_png(mask_path, cv2.resize(mask, (mask.shape[1] // 2, mask.shape[0] // 2)))
    with pytest.raises(DataError, match=f"^{mask_path}: mask size .* does not match image size"):
        FolderDataset(ccp3, "train.txt")[0]


def test_skip_mode_skips_and_reports(ccp3: Path) -> None:
    stems = FolderDataset(ccp3, "train.txt").stems
    (ccp3 / "images" / f"{stems[0]}.jpg").write_bytes(b"")
    (ccp3 / "masks" / f"{stems[2]}.png").unlink()
    ds = open_dataset(ccp3, "train.txt", on_error="skip")
    assert [s.name for s in ds] == [stems[1]]
    assert len(ds.skipped.errors) == 2
    assert stems[0] in ds.skipped.errors[0] and stems[2] in ds.skipped.errors[1]
    with pytest.raises(ValueError, match="on_error"):
        FolderDataset(ccp3, on_error="ignore")


@pytest.mark.parametrize("trailing_channel", [False, True])
@pytest.mark.parametrize("scale", [1, 255])
def test_npy_dataset_mask_layouts(tmp_path: Path, trailing_channel: bool, scale: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    masks = (rng.random((4, 8, 8)) > 0.5).astype(np.uint8)
    masks[0, 0, 0] = 1  # the 0/1-vs-0/255 check looks at the values, so make sure a 1 exists
    stored = masks * scale
    if trailing_channel:
        stored = stored[..., None]
    np.save(tmp_path / "imgs.npy", images)
    np.save(tmp_path / "masks.npy", stored)
    ds = open_dataset(f"{tmp_path / 'imgs.npy'}:{tmp_path / 'masks.npy'}")
    assert isinstance(ds, NpyDataset) and len(ds) == 4
    samples = list(ds)
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(s.image, images[i])
        np.testing.assert_array_equal(s.target, masks[i].astype(np.float32))
        assert s.target.shape == (8, 8) and not s.ignore.any()
    assert samples[0].name == "imgs_000000"


def test_npy_dataset_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "imgs.npy", np.zeros((2, 8, 8, 3), np.uint8))
    np.save(tmp_path / "masks.npy", np.zeros((2, 8, 9), np.uint8))
    with pytest.raises(DataError, match="masks.npy: mask shape"):
        open_dataset(f"{tmp_path / 'imgs.npy'}:{tmp_path / 'masks.npy'}")
    with pytest.raises(DataError, match="IMAGES.npy:MASKS.npy"):
        open_dataset(tmp_path / "imgs.npy")
    with pytest.raises(DataError, match="other.npy: .npy file not found"):
        open_dataset(f"{tmp_path / 'imgs.npy'}:{tmp_path / 'other.npy'}")


# --------------------------------------------------------------------------- 0/1 masks, split files


def _as_zero_one(root: Path, sub: str = "masks") -> None:
    """Rewrite a dataset's 0/255 maps as 0/1 (how some tools export labels)."""
    for path in (root / sub).glob("*.png"):
        write_png(path, (read_gray(path) >= 128).astype(np.uint8))


def test_zero_one_masks_read_as_the_same_targets(ccp3: Path, tmp_path: Path) -> None:
    # Before: 0/1 masks were thresholded at 128 -> all background (eval mIoU 0.19 instead of
    # 0.94; cache/prepare wrote all-zero targets), without a word.
    expected = [s.target for s in FolderDataset(ccp3, "train.txt")]
    _as_zero_one(ccp3)
    assert max(int(read_gray(p).max()) for p in (ccp3 / "masks").glob("*.png")) == 1
    got = list(FolderDataset(ccp3, "train.txt"))
    assert len(got) == 3
    for sample, target in zip(got, expected):
        assert target.mean() > 0.05  # a real person in each
        np.testing.assert_array_equal(sample.target, target)


def test_zero_one_training_cache_keeps_the_person(ccp3: Path, tmp_path: Path) -> None:
    from portraitseg.data.cache import build_cache, load_cache

    before = load_cache(build_cache([(ccp3, "train.txt")], tmp_path / "a.npz", 32, 90)[0], workers=1)
    _as_zero_one(ccp3)
    after = load_cache(build_cache([(ccp3, "train.txt")], tmp_path / "b.npz", 32, 90)[0], workers=1)
    assert after.targets.max() == 255
    np.testing.assert_array_equal(after.targets, before.targets)


def test_zero_one_ignore_and_alpha_maps(tmp_path: Path) -> None:
    root = synthetic_alpha_set(tmp_path / "a")
    _as_zero_one(root, "ignore")  # 255 band -> 1 band
    _as_zero_one(root, "alpha")  # the soft ramp >= 128 -> 1
    s0 = FolderDataset(root)[0]
    assert s0.ignore[:4].all() and not s0.ignore[4:].any()
    ramp = np.linspace(0, 255, 32).round()
    np.testing.assert_array_equal(s0.target[0], (ramp >= 128).astype(np.float32))


def test_split_file_with_byte_order_mark(tmp_path: Path) -> None:
    root = synthetic_alpha_set(tmp_path / "a", n=2)
    (root / "val.txt").write_bytes("\ufeffs1\r\ns0 \r\n".encode())  # as Windows Notepad saves it
    ds = FolderDataset(root, "val.txt")
    assert ds.stems == ["s1", "s0"]
    assert ds[0].name == "s1"
    (root / "bin.txt").write_bytes(b"s0\n\xff\xfe\x00junk\n")
    with pytest.raises(DataError, match=r"bin.txt: split file is not UTF-8 text"):
        FolderDataset(root, "bin.txt")


@pytest.mark.parametrize("entry", ["../outside/secret", "s0/../../outside/secret", "/tmp/abs"])
def test_split_entries_cannot_leave_the_dataset(tmp_path: Path, entry: str) -> None:
    # A real pair outside the dataset that the entry would otherwise read.
    outside = synthetic_alpha_set(tmp_path / "outside", n=1)
    (outside / "images" / "s0.png").rename(outside / "images" / "secret.png")
    (outside / "alpha" / "s0.png").rename(outside / "alpha" / "secret.png")
    root = synthetic_alpha_set(tmp_path / "ds" / "a", n=1)
    (root / "images" / "..").resolve().joinpath("outside").symlink_to(outside / "images")
    split = root / "val.txt"
    split.write_text(f"s0\n{entry}\n")
    ds = FolderDataset(root, "val.txt")
    assert ds[0].name == "s0"
    with pytest.raises(DataError, match=rf"^{split}: entry '{entry}' points outside the dataset"):
        ds[1]
    skipping = FolderDataset(root, "val.txt", on_error="skip")
    assert [s.name for s in skipping] == ["s0"]  # the bad entry is skipped and reported
    reason = f"{split}: entry '{entry}' points outside the dataset (absolute or '..')"
    assert skipping.skipped.errors == [reason]


def test_find_images_reports_fifos_and_folders_it_cannot_read(tmp_path: Path) -> None:
    # Both vanished from a run unreported: rglob skips a folder it may not list, and a FIFO is
    # neither a file nor a symbolic link. The FIFO is never opened (that would block).
    import json
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "a.jpg").write_bytes(b"any bytes")
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "folder.jpg").mkdir()  # a folder with an image's name: searched, not reported
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "b.jpg").write_bytes(b"any bytes")
    code = ("import json, sys; from portraitseg.data.datasets import find_images; "
            "f, e = find_images(sys.argv[1]); print(json.dumps([[str(p) for p in f], e]))")
    cmd = [sys.executable, "-c", code, str(tmp_path)]
    if os.geteuid() == 0:  # root reads any folder: drop the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder unreadable")
        caps = "-dac_override,-dac_read_search"
        cmd = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", *cmd]
    locked.chmod(0)
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    finally:
        locked.chmod(0o755)
    files, errors = json.loads(result.stdout)
    assert files == [str(tmp_path / "a.jpg")]
    assert errors == [f"{tmp_path / 'fifo.png'}: not a regular file (a FIFO, socket or device)",
                      f"{locked}: cannot read the folder (Permission denied); its images are skipped"]
