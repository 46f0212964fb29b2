"""``data.io``: the header-only pixel limit (shared by predict/eval/cache/prepare and the server)
and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from imagebombs import png_bomb
from portraitseg.data.datasets import find_images
from portraitseg.data.io import DataError, check_pixels, image_size, read_gray, read_rgb, remove_stale_temps
from portraitseg.defaults import MAX_PIXELS


def test_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "bomb.png")
    with pytest.raises(DataError) as exc:
        read_rgb(bomb)  # would decode 2.7 GB without the header check
    assert str(exc.value).startswith(f"{bomb}: image is ") and f"limit of {MAX_PIXELS}" in str(exc.value)
    with pytest.raises(DataError, match=r"^upload: image is .* over the limit of 1000"):
        check_pixels(bomb.read_bytes(), 1000, what="upload")  # bytes, as the server has them


def test_under_the_limit_and_unknown_data_pass(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((30, 40, 3), np.uint8))
    assert image_size(small) == (40, 30) and image_size(small.read_bytes()) == (40, 30)
    check_pixels(small, 1200)
    with pytest.raises(DataError, match=r"small.png: image is 40x30 = 1200 pixels, over the limit of 1199"):
        check_pixels(small, 1199)
    check_pixels(b"not an image", 10)  # left to the decoder, which names the real problem
    assert image_size(b"not an image") is None


def test_find_images_reports_symlink_loops(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    files, errors = find_images(tmp_path)
    assert files == [tmp_path / "a.png"]
    assert errors == [f"{tmp_path / 'loop.jpg'}: broken symbolic link or symlink loop"]


def test_remove_stale_temps(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".last.pt.tmp").write_bytes(b"x")
    (tmp_path / "keep.txt").write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [tmp_path / "sub" / ".last.pt.tmp"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "sub"]


def test_readers_open_only_common_photo_formats(tmp_path: Path) -> None:
    """read_rgb/read_gray (datasets, cache, prepare, export calibration) share load_image's
    allow-list: a PPM or an EPS named .png is refused, though OpenCV/PIL could decode them."""
    from portraitseg.data.io import open_image

    ppm = tmp_path / "mask.png"
    ppm.write_bytes(b"P5 4 3 255\n" + bytes(range(12)))  # a real 4x3 8-bit PGM
    assert cv2.imdecode(np.frombuffer(ppm.read_bytes(), np.uint8), cv2.IMREAD_GRAYSCALE).shape == (3, 4)
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 3\n%%EndComments\nshowpage\n%%EOF\n")
    for path in (ppm, eps):
        refused = rf"^{path}: not a readable image \(unknown or corrupt format"
        for read in (read_rgb, read_gray, open_image):
            with pytest.raises(DataError, match=refused):
                read(path)
        assert image_size(path) is None
    good = tmp_path / "ok.png"
    cv2.imwrite(str(good), np.zeros((3, 4), np.uint8))
    assert read_gray(good).shape == (3, 4)
    with open_image(good) as img:
        assert img.format == "PNG" and img.size == (4, 3)


def test_write_atomic_on_a_read_only_file_system_raises_the_write_error(tmp_path: Path) -> None:
    """The cleanup after a failed write must not replace the write's error with its own."""
    import errno
    import os
    import subprocess

    from portraitseg.data.io import write_atomic

    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(OSError) as info:
            write_atomic(ro / "out.png", b"x")
        assert info.value.errno == errno.EROFS and "out.png" in str(info.value)
        # Before: the cleanup's own EROFS was raised, with the write's error chained under it.
        assert info.value.__context__ is None
    finally:
        subprocess.run(["umount", str(ro)])


def test_jpeg_scan_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    """A 4096x4096 progressive JPEG with 5,000 scans (~80 s to decode) is refused from its bytes
    by every file reader, naming the file (the server refused it already)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
    from hostile import scan_bomb_jpeg

    from portraitseg.inference import load_image

    bomb = tmp_path / "photo.jpg"
    bomb.write_bytes(scan_bomb_jpeg())
    for read in (read_rgb, load_image):
        with pytest.raises(DataError, match=r"photo\.jpg: progressive JPEG with \d+ scans"):
            read(bomb)
