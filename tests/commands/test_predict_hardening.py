"""``portraitseg predict`` on hostile and awkward inputs (issue 11): bombs, reruns, temp files,
its own outputs, symlink loops, bad flags. Bad files are made in tmp at test time."""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import signal
from pathlib import Path

import pytest

from conftest import REPO
from imagebombs import png_bomb
from portraitseg.cli import main
from portraitseg.commands._common import sigterm_as_exit
from portraitseg.commands.predict_record import RECORD_NAME
from portraitseg.data.io import write_atomic

SAMPLE = REPO / "src" / "portraitseg" / "assets" / "astronaut.jpg"


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return Path(shutil.copy(SAMPLE, folder / "astronaut.jpg"))


def predict(*args: str) -> int:
    return main(["predict", *args, "--no-progress"])


def error_lines(err: str, needle: str) -> list[str]:
    return [line for line in err.splitlines() if needle in line]


def test_bomb_in_a_batch_is_one_line_and_the_batch_continues(photo: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bomb = png_bomb(photo.parent / "bomb.png")
    assert bomb.stat().st_size < 100_000
    out = tmp_path / "out"
    assert predict(str(photo.parent), "-o", str(out)) == 1
    err = capsys.readouterr().err
    lines = error_lines(err, "bomb.png")
    assert len(lines) == 1 and "pixels, over the limit of" in lines[0] and "Traceback" not in err
    assert "1 image(s) done, 1 failed, 1 file(s) written" in err
    assert (out / "astronaut.mask.png").is_file() and not (out / "bomb.mask.png").exists()


def test_max_pixels_is_configurable(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(str(photo), "-o", str(tmp_path / "out"), "--max-pixels", "1000") == 1
    line, = error_lines(capsys.readouterr().err, "astronaut.jpg:")
    assert "over the limit of 1000 (--max-pixels)" in line


def test_bomb_as_background(photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = png_bomb(tmp_path / "bg.png")
    code = predict(str(photo), "-o", str(tmp_path / "out"), "--output", "composite",
                   "--background", str(bomb))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and f"{bomb}: image is" in err


def test_same_command_twice_succeeds_and_different_content_is_kept(photo: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    args = (str(photo), "-o", str(out), "--output", "mask", "--output", "grid")
    assert predict(*args) == 0
    first = (out / "astronaut.mask.png").read_bytes()
    capsys.readouterr()
    assert predict(*args) == 0
    err = capsys.readouterr().err
    assert "1 image(s) done, 0 failed, 0 file(s) written" in err and "2 already up to date" in err
    assert (out / "astronaut.mask.png").read_bytes() == first
    # Different settings = different content: refused without --overwrite, the old file kept.
    assert predict(*args, "--no-guided", "--smoothstep", "0.45", "0.55") == 1
    assert "exists with different content (use --overwrite to replace it)" in capsys.readouterr().err
    assert (out / "astronaut.mask.png").read_bytes() == first


def test_output_folder_is_the_input_folder(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert predict(str(photo.parent), "-o", str(photo.parent)) == 2
    err = capsys.readouterr().err
    assert "input folder is the output folder" in err and "give another -o" in err


def test_glob_over_the_output_folder_skips_earlier_outputs(photo: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo.parent
    assert predict(str(photo), "-o", str(folder)) == 0  # astronaut.mask.png beside the photo
    capsys.readouterr()
    assert predict(str(folder / "*.*"), "-o", str(folder)) == 0
    err = capsys.readouterr().err
    assert "note: skipped 1 earlier predict output file(s)" in err
    assert not (folder / "astronaut.mask.mask.png").exists()


def test_symlink_loop_in_a_folder_is_reported(photo: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    loop = photo.parent / "loop.jpg"
    os.symlink(loop.name, loop)  # points at itself
    assert predict(str(photo.parent), "-o", str(tmp_path / "out")) == 1
    err = capsys.readouterr().err
    assert f"{loop}: broken symbolic link or symlink loop" in err
    assert (tmp_path / "out" / "astronaut.mask.png").is_file()


@pytest.mark.parametrize("value", ["-1", "0"])
def test_threads_must_be_positive(photo: Path, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        predict(str(photo), "--threads", value)
    assert exc.value.code == 2
    assert f"--threads: must be at least 1, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "bulk", "finetune"])
def test_absurd_thread_counts_are_refused(photo: Path, tmp_path: Path, command: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # --threads 100000 reached the runtime: ONNX Runtime spent minutes creating threads (a hang),
    # LiteRT crashed with SIGSEGV.
    out = "-o" if command != "finetune" else "--out"
    with pytest.raises(SystemExit) as exc:
        main([command, str(photo.parent), out, str(tmp_path / "out"), "--threads", "100000"])
    assert exc.value.code == 2
    assert "--threads: must be at most 128, got 100000" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_disk_full_leaves_no_temp_and_counts_true(photo: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    real = pathlib.Path.write_bytes

    def full_on_grid(self: Path, data: bytes) -> int:
        real(self, data[: len(data) // 2])  # half written, then the disk is full
        if ".grid." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", full_on_grid)
    out = tmp_path / "out"
    assert predict(str(photo), "-o", str(out), "--output", "mask", "--output", "grid") == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "0 image(s) done, 1 failed, 1 file(s) written" in err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.mask.png"]


def test_sigterm_mid_write_removes_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pathlib.Path.write_bytes

    def killed(self: Path, data: bytes) -> int:
        real(self, data)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises SystemExit right here
        return len(data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", killed)
    with pytest.raises(SystemExit) as exc, sigterm_as_exit():
        write_atomic(tmp_path / "x.mask.png", b"data")
    assert exc.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_from_a_killed_run_is_cleaned(photo: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / ".astronaut.mask.png.tmp").write_bytes(b"half")  # what kill -9 leaves
    (out / ".notes.txt.tmp").write_bytes(b"not ours")
    assert predict(str(photo), "-o", str(out)) == 0
    assert "removed 1 temporary file(s) left by an interrupted run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [".notes.txt.tmp", RECORD_NAME, "astronaut.mask.png"]


def test_an_output_the_format_cannot_hold_is_one_line_naming_why(photo: Path, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture) -> None:
    # A 1 x 70000 px PNG: its mask is a valid PNG, its grid (.jpg, 3x70000) is over JPEG's 65500
    # px a side. It was 'cannot encode image as .jpg' after an OpenCV log of several lines.
    from PIL import Image

    tall = photo.parent / "tall.png"
    Image.new("RGB", (1, 70_000), (90, 60, 30)).save(tall)
    out = tmp_path / "out"
    assert predict(str(tall), str(photo), "-o", str(out), "--output", "mask", "--output", "grid") == 1
    err = capfd.readouterr().err
    line = (f"{tall}: cannot write the grid as .jpg: it is 3x70000 pixels and the format holds "
            "at most 65500 a side")
    assert line in err.splitlines()
    assert "imencode" not in err and "OpenCV" not in err
    assert sorted(p.name for p in out.iterdir() if p.name != RECORD_NAME) == ["astronaut.grid.jpg",
                                                                             "astronaut.mask.png"]


def test_a_fifo_is_named_not_a_file_and_never_opened(photo: Path, tmp_path: Path,
                                                     capfd: pytest.CaptureFixture) -> None:
    # Given by name it was 'no such file or folder'; matched by a glob it vanished unreported.
    fifo = photo.parent / "fifo.png"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    assert predict(str(fifo), str(photo.parent / "*"), "-o", str(out)) == 1
    err = capfd.readouterr().err
    assert error_lines(err, "fifo.png") == [f"{fifo}: not a regular file (a FIFO, socket or device)"]
    assert "1 image(s) done, 1 failed" in err
    assert (out / "astronaut.mask.png").is_file()


def test_one_photo_named_twice_is_one_image(photo: Path, tmp_path: Path,
                                            capfd: pytest.CaptureFixture) -> None:
    # It failed with 'output ... is also the output of <the same photo>', exit 1.
    folder = photo.parent
    twice = [str(photo), str(photo), str(folder / ".." / folder.name / photo.name), str(folder),
             str(folder / "*.jpg")]
    assert predict(*twice, "-o", str(tmp_path / "out")) == 0
    assert "1 image(s) done, 0 failed, 1 file(s) written" in capfd.readouterr().err


def test_a_full_disk_stops_the_batch_in_one_line_and_the_rerun_finishes(photo: Path, tmp_path: Path,
                                                                        capfd: pytest.CaptureFixture) -> None:
    # A real 200 KB tmpfs: every image after the disk filled failed too, one line each ('[Errno
    # 28] No space left on device', not naming the file), while each was still segmented.
    from PIL import Image

    from small_disk import tmpfs

    small = Image.open(photo).resize((160, 160))  # about 6 images' outputs fill the disk
    for i in range(12):
        small.rotate(i).save(photo.parent / f"p{i:02}.jpg")
    photo.unlink()
    kinds = ["--output", "mask", "--output", "grid"]
    big = tmp_path / "big"
    with tmpfs(tmp_path / "disk", size="200k") as disk:
        out = disk / "out"
        assert predict(str(photo.parent), "-o", str(out), *kinds) == 1
        err = capfd.readouterr().err.splitlines()
        full = [line for line in err if "No space left on device" in line]
        assert len(full) == 1 and full[0].endswith(": cannot write (No space left on device)"), err
        assert full[0].startswith(f"{photo.parent}/p") and f": {out}/p" in full[0]
        assert err[-1].startswith("stopped (the output folder cannot take more files) after ")
        made = [p for p in out.iterdir() if p.name != RECORD_NAME]
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and 0 < len(made) < 24
        for path in made:
            Image.open(path).load()  # whole files only
        shutil.copytree(out, big)
    # Finished on a larger disk: what was written is kept, the rest computed.
    assert predict(str(photo.parent), "-o", str(big), *kinds) == 0
    assert len([p for p in big.iterdir() if p.name != RECORD_NAME]) == 24
    assert "not recomputed" in capfd.readouterr().err


def test_a_file_name_with_a_newline_is_still_one_line(photo: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture) -> None:
    # The name's newline split its 'path: problem' line in two.
    (photo.parent / "bad\nname.png").write_bytes(b"")
    assert predict(str(photo.parent), "-o", str(tmp_path / "out")) == 1
    err = capfd.readouterr().err.splitlines()
    why = "not a readable image (unknown or corrupt format; JPEG, PNG, WebP, BMP, GIF or TIFF are read)"
    assert err[0] == f"{photo.parent}/bad\\nname.png: {why}"
    assert err[1].startswith("1 image(s) done, 1 failed") and len(err) == 2
