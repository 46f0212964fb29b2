"""``portraitseg finetune`` end to end: OUT refusal, outputs that load, --resume, --overwrite,
bad files, Ctrl-C, and a real fine-tune that beats the bundled model on picsart_selfie."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import copy_subset, first_stems, model_threads
from portraitseg.cli import main

# Tiny and fast: 64 px training and export, a few seconds of training, no replay data.
# One thread (conftest.model_threads): two spin-waiting threads on a busy 2-core machine crawl.
FAST = ["--input-size", "64", "--export-size", "64", "--minutes", "0.05", "--no-replay", "--threads",
        str(model_threads())]


def person(seed: int, h: int = 60, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2 + int(rng.integers(-4, 5)), h // 2 + 6), (w // 4, h // 3), 0, 0, 360, 255, -1)
    img[mask > 0] = (140, 160, 200)
    return img, mask


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    """A plain folder of x.jpg + x_mask.png pairs (0/1 masks, as some tools export them)."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(8):
        img, mask = person(i)
        cv2.imwrite(str(root / f"p{i}.jpg"), img)
        cv2.imwrite(str(root / f"p{i}_mask.png"), mask // 255)
    return root


def finetune(*args: str | Path) -> int:
    """The command's exit code (argparse's own errors exit 2 through SystemExit)."""
    try:
        return main(["finetune", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)


def test_refuses_a_non_empty_out(pairs: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert finetune(pairs, "-o", out, *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and "--resume" in err and "--overwrite" in err
    assert finetune(pairs, "-o", out, "--overwrite", *FAST) == 2  # not ours: never deleted
    assert "did not write (mine.txt)" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep me" and sorted(os.listdir(out)) == ["mine.txt"]


def test_option_errors_come_before_any_work(pairs: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert finetune(pairs, "-o", out, "--resume", "--overwrite", *FAST) == 2
    assert "give one of them" in capsys.readouterr().err
    assert finetune(pairs, "-o", out, "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert finetune(pairs, "-o", out, "--minutes", "0", "--no-replay") == 2
    assert "--minutes: must be in (0, 10080]" in capsys.readouterr().err
    assert finetune(tmp_path / "missing", "-o", out, *FAST) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_wrong_init_weights_fail_before_any_work(pairs: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """--init-weights given an exported model: one line naming it, before the caches are built
    (it failed only after building them, and called the .onnx a pickle that would run code)."""
    onnx = Path(__file__).resolve().parents[2] / "src" / "portraitseg" / "weights" / "default.onnx"
    out = tmp_path / "out"
    assert finetune(pairs, "-o", out, "--init-weights", onnx, *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(onnx) in err and "exported ONNX model" in err, err
    assert not out.exists() or not any(out.iterdir())


def test_read_only_out_is_one_line_before_any_work(pairs: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A real read-only mount as OUT's parent: one line naming it, exit 2 as every command's
    unwritable output (outfiles.check_folder; it was a traceback)."""
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert finetune(pairs, "-o", ro / "out", *FAST) == 2
        err = capsys.readouterr().err.strip()
        out = ro / "out"
        assert err == f"portraitseg finetune: error: -o {out}: cannot write in {ro}: Read-only file system"


def test_finetune_then_resume_then_overwrite(pairs: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    """The outputs load and predict; a re-run is refused; --resume trains on from last.pt with the
    caches reused; --overwrite starts over (caches still reused); a bad file is listed, exit 1."""
    from portraitseg import Segmenter

    cv2.imwrite(str(pairs / "lonely.jpg"), person(99)[0])  # no mask: reported, left out
    out = tmp_path / "out"
    assert finetune(pairs, "-o", out, *FAST) == 1
    captured = capsys.readouterr()
    assert f"skipped: {pairs / 'lonely.jpg'}: no mask" in captured.err
    assert "no held-out set given" in captured.out and "2 held out" in captured.out
    assert "TFLite" in captured.out or (out / "model.tflite").is_file()  # skipped, and said so
    assert f"portraitseg predict --model {out / 'model.onnx'}" in captured.out
    for name in ("model.onnx", "model.pt", "MODEL_CARD.md", "report.json", "run/best.pt", "run/last.pt"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["numbers"]["after"]["n_images"] == 2 and 0 <= report["numbers"]["after"]["miou"] <= 1
    epochs = report["epochs"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "| bundled |" in card and "fine-tuned (model.onnx)" in card and "lonely.jpg" in card
    img = cv2.cvtColor(person(3)[0], cv2.COLOR_BGR2RGB)
    alpha = Segmenter(model=out / "model.onnx", threads=1).mask(img)
    assert alpha.shape == img.shape[:2] and alpha.dtype == np.float32

    assert finetune(pairs, "-o", out, *FAST) == 2  # OUT holds a result now
    capsys.readouterr()
    assert finetune(pairs, "-o", out, "--resume", "--minutes", "0.05", "--threads", "1") == 1
    captured = capsys.readouterr().out
    assert captured.count("reused: inputs unchanged") == 2  # train.npz, val.npz
    resumed = json.loads((out / "report.json").read_text())
    assert resumed["epochs"] > epochs and resumed["history"][:epochs] == report["history"]
    assert finetune(pairs, "-o", out, "--resume", "--input-size", "96") == 2
    assert "only --minutes may change" in capsys.readouterr().err

    assert finetune(pairs, "-o", out, "--overwrite", *FAST) == 1
    captured = capsys.readouterr().out
    assert captured.count("reused: inputs unchanged") == 2
    assert json.loads((out / "report.json").read_text())["history"][0]["epoch"] == 1


def test_ctrl_c_keeps_the_best_and_writes_the_report(pairs: Path, tmp_path: Path) -> None:
    """A real SIGINT to a running fine-tune, once its first epoch is saved: exit 130, and the
    exports and the report are there."""
    out = tmp_path / "out"
    args = [sys.executable, "-m", "portraitseg", "finetune", str(pairs), "-o", str(out),
            "--input-size", "64", "--export-size", "64", "--minutes", "30", "--no-replay", "--threads", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (out / "run" / "best.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stdout and "keeping the best so far" in stdout
    assert (out / "model.onnx").is_file() and (out / "MODEL_CARD.md").is_file()
    assert json.loads((out / "report.json").read_text())["interrupted"] is True


def test_real_finetune_beats_the_bundled_model_on_picsart(shared_data: Path, tmp_path: Path) -> None:
    """~150 picsart_selfie training photos, 40 of its val photos held out, 90 s of training at
    160 px with replay data: the held-out mIoU rises above the bundled model's (0.916 on the
    whole val set), and the exported model predicts."""
    from portraitseg import Segmenter

    src = shared_data / "picsart_selfie"
    if not src.is_dir():
        pytest.skip(f"{src} not found (set PORTRAITSEG_SHARED to the shared folder)")
    train = copy_subset(src, tmp_path / "selfies", first_stems(src, "train.txt", 150))
    held = copy_subset(src, tmp_path / "selfies_val", first_stems(src, "val.txt", 40), "val.txt")
    out = tmp_path / "out"
    code = finetune(train, "--val", held, "-o", out, "--minutes", "1.5", "--input-size", "160",
                    "--replay", shared_data, "--threads", str(model_threads()))
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    before, after = report["numbers"]["before"], report["numbers"]["after"]
    assert after["n_images"] == before["n_images"] == 40
    assert after["miou"] > before["miou"], report["numbers"]
    photo = next((held / "images").iterdir())
    alpha = Segmenter(model=out / "model.onnx", threads=1).mask(photo)
    assert alpha.ndim == 2 and 0.05 < float(alpha.mean()) < 0.95


def test_a_part_with_no_readable_pair_lists_why_before_its_error(pairs: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    """Every held-out pair left out (a mask of another size): the skipped lines, then one error
    naming the part. It was only 'val.npz: no readable samples to cache', not which file or why."""
    held = tmp_path / "held"
    held.mkdir()
    img, mask = person(50)
    cv2.imwrite(str(held / "h0.jpg"), img)
    cv2.imwrite(str(held / "h0_mask.png"), cv2.resize(mask, (24, 30)))
    out = tmp_path / "out"
    assert finetune(pairs, "--val", held, "-o", out, *FAST) == 2
    err = capsys.readouterr().err.splitlines()
    # The user's file, not our link to it (OUT/data/held/masks/h0.png).
    assert f"skipped: {held / 'h0_mask.png'}: mask size 24x30 does not match image size 48x60" in err, err
    val = out / "cache" / "val.npz"
    assert err[-1] == (f"portraitseg finetune: error: {val}: no readable samples to cache: every image of "
                       "the held-out part was left out (listed above)")
