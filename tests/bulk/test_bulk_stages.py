"""The bulk stages chained by hand (no Ray): the same bytes as ``predict``, bad rows carried
through with their error, predict's write rules."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, model_threads
from portraitseg.bulk import BulkSettings
from portraitseg.bulk.plan import plan_jobs
from portraitseg.bulk.runner import suffixes_for
from portraitseg.bulk.stages import (
    SegmentActor,
    check_batch,
    decode_batch,
    encode_batch,
    objects,
    write_batch,
)
from portraitseg.cli import main
from portraitseg.commands.predict import Job
from portraitseg.commands.predict_record import RECORD_NAME, Record, file_digest
from portraitseg.inference import load_image

ASSETS = sorted((REPO / "src" / "portraitseg" / "assets").glob("*.jpg"))
KINDS = ("mask", "cutout", "composite", "grid")


def file_rows(paths: list[Path], out: Path) -> dict[str, np.ndarray]:
    """Rows as plan_jobs makes them (no record entries: every image is computed)."""
    suffixes = suffixes_for(KINDS, "png")
    rows = {"idx": np.arange(len(paths)), "path": np.array([str(p) for p in paths], dtype=object),
            "src": np.array([str(p.resolve()) for p in paths], dtype=object),
            "record": np.array([""] * len(paths), dtype=object)}
    for kind in KINDS:
        names = [str(out / f"{p.stem}.{kind}{suffixes[kind]}") for p in paths]
        rows[f"out_{kind}"] = np.array(names, dtype=object)
    return rows


RECIPES = {k: f"recipe of {k}" for k in KINDS}  # the Ray tests use predict's real ones


def chain(rows: dict[str, np.ndarray], out: Path, settings: BulkSettings, overwrite: bool = False,
          ) -> dict[str, np.ndarray]:
    """check -> decode -> segment -> encode -> write, as the Ray job runs them."""
    batch = check_batch(rows, str(out.resolve()), RECIPES)
    batch = SegmentActor(settings, KINDS, threads=model_threads())(decode_batch(batch, settings.max_pixels))
    encoded = encode_batch(batch, suffixes_for(KINDS, "png"))
    return write_batch(encoded, str(out.resolve()), RECIPES, overwrite)


@pytest.fixture
def photos(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    return [Path(shutil.copy2(p, folder)) for p in ASSETS]


def test_stage_chain_writes_what_predict_writes(photos: list[Path], tmp_path: Path) -> None:
    bad = photos[0].parent / "broken.jpg"
    bad.write_bytes(photos[0].read_bytes()[:2000])  # a real photo cut short
    status = chain(file_rows([bad, *photos], tmp_path / "bulk"), tmp_path / "bulk",
                   BulkSettings(background=(51, 102, 255)))
    assert list(status["error"][1:]) == ["", ""]
    assert status["error"][0].startswith(f"{bad}: not a readable image")
    assert list(status["written"]) == [0, 4, 4]
    assert len({str(w) for w in status["worker"]}) == 1

    args = ["predict", *map(str, photos), "-o", str(tmp_path / "predict"), "--no-progress",
            "--background", "#3366ff", "--composite-format", "png", "--threads", str(model_threads())]
    for kind in KINDS:
        args += ["--output", kind]
    assert main(args) == 0
    made = {p.name: p.read_bytes() for p in (tmp_path / "bulk").iterdir() if p.name != RECORD_NAME}
    assert made == {p.name: p.read_bytes() for p in (tmp_path / "predict").iterdir() if p.name != RECORD_NAME}
    assert len(made) == 8
    # The record names every output with its bytes' hash and the input's, as predict's does.
    record = Record.load(tmp_path / "bulk")
    assert sorted(record.entries) == sorted(made)
    assert all(record.entries[n].output == hashlib.sha256(made[n]).hexdigest() for n in made)


def test_predict_rules_when_writing(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = BulkSettings()
    assert list(chain(file_rows(photos[:1], out), out, settings)["written"]) == [4]
    again = chain(file_rows(photos[:1], out), out, settings)  # identical outputs: kept as they are
    assert (list(again["written"]), list(again["unchanged"]), list(again["error"])) == ([0], [4], [""])
    mask = out / f"{photos[0].stem}.mask.png"
    mask.write_bytes(b"an earlier result")
    refused = chain(file_rows(photos[:1], out), out, settings)
    message = f"{photos[0]}: output {mask} exists with different content (use --overwrite to replace it)"
    assert refused["error"][0] == message
    assert mask.read_bytes() == b"an earlier result" and list(refused["written"]) == [0]
    replaced = chain(file_rows(photos[:1], out), out, settings, overwrite=True)
    assert list(replaced["written"]) == [1] and mask.read_bytes() != b"an earlier result"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [RECORD_NAME]  # no temp files


def test_check_skips_what_the_record_says_is_done(photos: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    chain(file_rows(photos, out), out, BulkSettings())
    rows = plan_jobs([Job(p, Path()) for p in photos], out, KINDS, "png", Record.load(out)).rows
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    checked = check_batch(batch, str(out.resolve()), RECIPES)
    assert list(checked["skipped"]) == [True, True]
    (out / f"{photos[1].stem}.grid.jpg").write_bytes(b"edited by hand")
    checked = check_batch(batch, str(out.resolve()), {**RECIPES, "mask": "another model"})
    assert list(checked["skipped"]) == [False, False]
    checked = check_batch(batch, str(out.resolve()), RECIPES)
    assert list(checked["skipped"]) == [True, False]
    assert checked["input_digest"][0] == file_digest(photos[0])
    photos[0].unlink()
    gone = check_batch(batch, str(out.resolve()), RECIPES)
    assert gone["error"][0] == f"{photos[0]}: cannot read (No such file or directory)"


def test_bytes_decode_like_files(tmp_path: Path) -> None:
    # A real photo stored sideways with an EXIF orientation tag: both routes must turn it upright.
    with Image.open(ASSETS[0]) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        buf = io.BytesIO()
        im.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", exif=exif)
    path = tmp_path / "sideways.jpg"
    path.write_bytes(buf.getvalue())
    batch = {"path": np.array(["s3://b/sideways.jpg", "s3://b/junk.jpg"], dtype=object),
             "bytes": objects([buf.getvalue(), b"not an image"])}
    out = decode_batch(batch, max_pixels=10**8)
    assert "bytes" not in out
    np.testing.assert_array_equal(out["image"][0], load_image(path))
    assert out["image"][0].shape[:2] == load_image(ASSETS[0]).shape[:2]
    assert out["error"][1].startswith("s3://b/junk.jpg: not a readable image")
    assert out["image"][1].shape == (0, 0, 3)
    small = decode_batch(batch, max_pixels=100)
    assert small["error"][0].startswith("s3://b/sideways.jpg: image is")
    assert "--max-pixels" in small["error"][0]


def test_image_column_and_bad_arrays(tmp_path: Path) -> None:
    image = load_image(ASSETS[0])
    batch = {"image": objects([image, np.full((8, 8, 3), 300, np.int64)])}
    out = SegmentActor(BulkSettings(), ("mask",), threads=model_threads())(decode_batch(batch, 10**8))
    assert out["mask"][0].shape == image.shape[:2] and out["mask"][0].dtype == np.uint8
    assert out["error"][0] == ""
    assert out["error"][1].startswith("image: int64 image values must be 0..255")
    assert out["mask"][1].shape == (0, 0)


def test_an_image_the_jpeg_grid_cannot_hold_is_its_rows_error(photos: list[Path], tmp_path: Path) -> None:
    # 1 x 70000 px: segmentable and a valid PNG mask, but its grid (.jpg) is over JPEG's 65500 px
    # a side. encode_batch raised, and Ray aborted the whole job on it.
    tall = photos[0].parent / "tall.png"
    Image.new("RGB", (1, 70_000), (90, 60, 30)).save(tall)
    out = tmp_path / "out"
    status = chain(file_rows([tall, *photos], out), out, BulkSettings())
    assert status["error"][0] == (f"{tall}: cannot write the grid as .jpg: it is 3x70000 pixels and the "
                                  "format holds at most 65500 a side")
    assert list(status["error"][1:]) == ["", ""] and list(status["written"]) == [0, 4, 4]
    assert not list(out.glob("tall.*"))  # none of its outputs: an image is written whole or not at all
