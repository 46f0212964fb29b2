"""``predict`` after an interruption (issue 18): it says how far it got, and the rerun skips the
finished images without decoding them or running the model, while anything that changed (input,
option, an output edited by hand) is computed again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from portraitseg.cli import main
from portraitseg.commands.predict_record import RECORD_NAME
from portraitseg.inference import Segmenter

ASSETS = REPO / "src" / "portraitseg" / "assets"
KINDS = ("--output", "mask", "--output", "grid")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """in/a.jpg, in/b.jpg, in/sub/c.jpg: real photos."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(ASSETS / "astronaut.jpg", folder / "a.jpg")
    shutil.copy(ASSETS / "grace_hopper.jpg", folder / "b.jpg")
    shutil.copy(ASSETS / "astronaut.jpg", folder / "sub" / "c.jpg")
    return folder


@pytest.fixture
def segmented(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The image files the model is run on (Segmenter.predict still does the real work; the
    model fingerprint's run on the bundled sample, an array, is not counted)."""
    calls: list[Path] = []
    real = Segmenter.predict

    def counting(self: Segmenter, image: object) -> object:
        if isinstance(image, (str, Path)):
            calls.append(Path(image))
        return real(self, image)

    monkeypatch.setattr(Segmenter, "predict", counting)
    return calls


def predict(*args: str) -> int:
    return main(["predict", *args, "--no-progress"])


def files(folder: Path) -> dict[str, bytes]:
    """The outputs (without predict's record of finished work)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD_NAME}


def test_rerun_skips_finished_images_without_segmenting_them(photos: Path, tmp_path: Path,
                                                            segmented: list[Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    assert len(segmented) == 3
    first = files(out)
    capsys.readouterr()
    segmented.clear()
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    assert segmented == []  # before issue 18 all three were decoded and segmented again
    assert "3 image(s) done, 0 failed, 0 file(s) written" in capsys.readouterr().err
    assert files(out) == first
    # --overwrite recomputes (and, the content being the same, leaves the files as they are).
    assert predict(str(photos), "-o", str(out), *KINDS, "--overwrite") == 0
    assert len(segmented) == 3 and files(out) == first


def test_what_changed_is_computed_again(photos: Path, tmp_path: Path, segmented: list[Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    segmented.clear()
    # A different photo under the same name: computed, and (different content) refused.
    shutil.copy(ASSETS / "astronaut.jpg", photos / "b.jpg")
    old_b = (out / "b.mask.png").read_bytes()
    capsys.readouterr()
    assert predict(str(photos), "-o", str(out), *KINDS) == 1
    assert segmented == [photos / "b.jpg"]
    err = capsys.readouterr().err
    assert "b.mask.png exists with different content (use --overwrite to replace it)" in err
    assert (out / "b.mask.png").read_bytes() == old_b
    # An output edited by hand: its image is computed again, the edit is kept (no --overwrite).
    shutil.copy(ASSETS / "grace_hopper.jpg", photos / "b.jpg")
    Image.new("L", (4, 4)).save(out / "a.mask.png")
    edited = (out / "a.mask.png").read_bytes()
    segmented.clear()
    assert predict(str(photos), "-o", str(out), *KINDS) == 1
    assert segmented == [photos / "a.jpg"]
    assert (out / "a.mask.png").read_bytes() == edited
    # A new option: every image is computed.
    segmented.clear()
    assert predict(str(photos), "-o", str(out), *KINDS, "--no-guided", "--overwrite") == 0
    assert len(segmented) == 3


def test_a_new_background_leaves_masks_up_to_date(photos: Path, tmp_path: Path, segmented: list[Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    one = str(photos / "a.jpg")
    assert predict(one, "-o", str(out), "--output", "mask", "--output", "composite") == 0
    segmented.clear()
    capsys.readouterr()
    code = predict(one, "-o", str(out), "--output", "mask", "--output", "composite",
                   "--background", "3366ff", "--overwrite")
    assert code == 0 and len(segmented) == 1  # the composite needs the model
    err = capsys.readouterr().err
    assert "1 file(s) written" in err and "1 already up to date" in err  # the mask did not change
    segmented.clear()
    assert predict(one, "-o", str(out), "--output", "mask") == 0
    assert segmented == []


def test_damaged_record_costs_only_time(photos: Path, tmp_path: Path, segmented: list[Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    record = out / RECORD_NAME
    lines = record.read_text().splitlines()
    assert len(lines) == 6 and {json.loads(line)["out"] for line in lines} >= {"sub/c.mask.png"}
    record.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:30])  # what a kill mid-append leaves
    segmented.clear()
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    assert len(segmented) == 1  # only the image whose lines were lost
    # A record that cannot be written (here: a folder in its place) is a note, not a failure.
    shutil.rmtree(out)
    (out / RECORD_NAME).mkdir(parents=True)
    capsys.readouterr()
    assert predict(str(photos), "-o", str(out), *KINDS) == 0
    err = capsys.readouterr().err
    assert err.count(f"note: cannot update {out / RECORD_NAME}") == 1
    assert (out / "sub" / "c.grid.jpg").is_file()


def test_interrupted_run_says_how_far_it_got_and_the_rerun_finishes(
        tmp_path: Path, segmented: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    """A real Ctrl-C (SIGINT) to a real `portraitseg predict` process."""
    folder = tmp_path / "in"
    folder.mkdir()
    big = Image.open(ASSETS / "astronaut.jpg").resize((768, 768))  # slow enough to interrupt
    total = 16
    for i in range(total):
        big.save(folder / f"p{i:02d}.jpg", quality=90 + i % 5)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "portraitseg", "predict", str(folder), "-o", str(out), "--no-progress",
           "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    record = out / RECORD_NAME
    deadline = time.monotonic() + 120
    while not (record.is_file() and record.read_text().count("\n") >= 1) and proc.poll() is None:
        assert time.monotonic() < deadline, "predict wrote nothing in 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    match = re.search(r"interrupted after (\d+) of 16 image\(s\): (\d+) image\(s\) done, 0 failed, "
                      r"(\d+) file\(s\) written", err)
    assert match, err
    reached, done, written = map(int, match.groups())
    assert 1 <= done < total and reached in (done, done + 1), err
    masks = sorted(out.glob("*.mask.png"))
    assert written == len(masks) and done <= len(masks) <= done + 1
    assert "run the same command again to finish" in err and "Traceback" not in err

    capsys.readouterr()
    assert predict(str(folder), "-o", str(out), "--threads", "1") == 0
    assert len(segmented) == total - done  # the finished ones are not recomputed
    assert f"{total} image(s) done, 0 failed" in capsys.readouterr().err
    assert len(list(out.glob("*.mask.png"))) == total
    alpha = np.asarray(Image.open(out / "p00.mask.png"))
    assert alpha.shape == (768, 768) and alpha.max() == 255
