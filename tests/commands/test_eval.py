"""``portraitseg eval`` end to end: JSON shapes, reports, errors and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from portraitseg.checkpoint import save_weights
from portraitseg.cli import main
from portraitseg.commands.eval import model_labels
from portraitseg.models import create_model

FLAT_KEYS = {
    "miou",
    "person_iou",
    "pixel_accuracy",
    "boundary_f1",
    "n_images",
    "background_iou",
    "mean_per_image",
}


def shared_dir() -> Path:
    """The ``shared`` folder beside the repo root, or $PORTRAITSEG_SHARED."""
    env = os.environ.get("PORTRAITSEG_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared"


@pytest.fixture(scope="module")
def shared() -> Path:
    path = shared_dir()
    if not (path / "data" / "vikram_val").is_dir() or not (path / "anchors").is_dir():
        pytest.skip(f"real data/peer models not found under {path} (set PORTRAITSEG_SHARED)")
    return path


@pytest.fixture()
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A random-init model: enough to exercise the CLI without the bundled weights."""
    torch.manual_seed(0)
    return save_weights(create_model("mobile-unet-035-bilinear", input_size=64), tmp_path / "tiny.pt")


def make_dataset(root: Path, stems: list[str]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for stem in stems:
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
        mask = np.zeros((48, 40), np.uint8)
        mask[10:40, 8:30] = 255
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), mask)
    return root


def test_single_model_json_is_flat_and_out_has_gallery(shared: Path, tmp_path: Path, capsys) -> None:
    out_json, out_dir = tmp_path / "out.json", tmp_path / "reports"
    args = ["eval", "mediapipe_selfie_256", "--data", str(shared / "data" / "vikram_val"), "--limit", "5"]
    args += ["--anchors", str(shared / "anchors"), "--json", str(out_json), "--out", str(out_dir), "--quiet"]
    assert main(args) == 0
    summary = json.loads(out_json.read_text())
    assert FLAT_KEYS <= set(summary) and summary["n_images"] == 5
    assert summary["miou"] > 0.8
    folder = out_dir / "mediapipe_selfie_256" / "vikram_val_val"
    assert (folder / "worst.png").is_file() and (folder / "per_image.csv").is_file()
    assert (out_dir / "comparison.md").is_file()
    table = capsys.readouterr().out
    assert "| mediapipe_selfie_256 |" in table and "vikram_val/val mIoU" in table


def test_console_script_as_in_the_docs(shared: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PORTRAITSEG_ANCHORS": str(shared / "anchors")}
    cmd = [sys.executable, "-m", "portraitseg", "eval", "mediapipe_selfie_256"]
    cmd += ["--data", str(shared / "data" / "vikram_val"), "--limit", "5", "--json", "out.json"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert FLAT_KEYS <= set(json.loads((tmp_path / "out.json").read_text()))


def test_several_models_json_is_nested(shared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "nested.json"
    args = ["eval", str(tiny_checkpoint), "--peers", "mediapipe_selfie_256,prisma_net_256"]
    args += [
        "--data",
        str(shared / "data" / "vikram_val"),
        "--limit",
        "2",
        "--anchors",
        str(shared / "anchors"),
    ]
    args += ["--json", str(out_json), "--quiet"]
    assert main(args) == 0
    nested = json.loads(out_json.read_text())
    assert set(nested) == {"tiny", "mediapipe_selfie_256", "prisma_net_256"}
    assert FLAT_KEYS <= set(nested["prisma_net_256"]["vikram_val/val"])


def test_corrupt_image_exits_2_naming_the_file(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", ["good", "broken"])
    (data / "images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.jpg" in err[0] and err[0].startswith("portraitseg eval: error:")
    # --skip-bad evaluates the rest, lists what was skipped and exits 1 (as cache and prepare do).
    out_json = tmp_path / "s.json"
    assert (
        main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--json", str(out_json)]) == 1
    )
    assert json.loads(out_json.read_text())["n_images"] == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 file(s) skipped per model" in err


def test_bomb_and_all_bad_with_skip_bad(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    from imagebombs import png_bomb

    data = make_dataset(tmp_path / "ds", ["good", "bomb"])
    (data / "images" / "bomb.jpg").unlink()
    png_bomb(data / "images" / "bomb.png")
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "bomb.png: image is" in err and "over the limit of" in err and "Traceback" not in err
    # Every sample bad: the reasons are listed, then the one-line error.
    code = main(["eval", str(tiny_checkpoint), "--data", str(data), "--skip-bad", "--quiet",
                 "--max-pixels", "10"])
    assert code == 2
    err = capsys.readouterr().err
    assert "skipped: " in err and "good.jpg: image is" in err and "bomb.png: image is" in err
    assert "no images were evaluated (2 skipped)" in err


def test_threads_must_be_positive(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["eval", str(tiny_checkpoint), "--data", str(tmp_path), "--threads", "-1"])
    assert "--threads: must be at least 1, got -1" in capsys.readouterr().err


def test_peers_outside_the_repo(tmp_path: Path, monkeypatch, capsys) -> None:
    from portraitseg.runtimes import factory

    if not (Path(__file__).resolve().parents[2] / ".." / "shared" / "anchors").is_dir():
        pytest.skip("../shared/anchors beside the repo not found")
    data = make_dataset(tmp_path / "ds", ["a"])
    monkeypatch.chdir(tmp_path)  # ../shared/anchors does not exist from here
    monkeypatch.delenv("PORTRAITSEG_ANCHORS", raising=False)
    anchors = factory.peer_path(factory.peer_spec("sinet_320"))
    assert anchors.is_file()  # found beside the repo checkout instead
    monkeypatch.setenv("PORTRAITSEG_ANCHORS", str(tmp_path / "nowhere"))
    assert main(["eval", "--peers", "sinet_320", "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sinet_320.onnx: peer model file not found" in err and "--anchors" in err
    assert "PORTRAITSEG_ANCHORS" in err
    # Without the tflite extra, a .tflite peer names the extra to install.
    monkeypatch.delenv("PORTRAITSEG_ANCHORS")
    real = factory._installed
    monkeypatch.setattr(factory, "_installed", lambda m: False if m == "ai_edge_litert" else real(m))
    assert main(["eval", "--peers", "all", "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    from portraitseg.locate import install_hint

    assert len(err.splitlines()) == 1 and f"the LiteRT runtime: {install_hint('tflite')}" in err


def test_bad_arguments_exit_2(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", ["a"])
    assert main(["eval", "--peers", "nope", "--data", str(data)]) == 2
    assert "unknown peer model 'nope'" in capsys.readouterr().err
    assert main(["eval", "--data", str(data)]) == 2
    assert "no model given" in capsys.readouterr().err
    assert main(["eval", str(tiny_checkpoint), "--data", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope.pt"), "--data", str(data)]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_eval_default_runs_the_backend_predict_runs(shared: Path, tmp_path: Path) -> None:
    """'default' means one thing: eval and predict (Segmenter) open the same bundled file."""
    from portraitseg import Segmenter

    out_json = tmp_path / "d.json"
    args = ["eval", "default", "--data", str(shared / "data" / "vikram_val"), "--limit", "2", "--quiet",
            "--json", str(out_json)]
    assert main(args) == 0
    assert json.loads(out_json.read_text())["backend"] == Segmenter(threads=1).runtime.backend
    assert main([*args, "--backend", "onnx", "--overwrite"]) == 0
    assert json.loads(out_json.read_text())["backend"] == "onnxruntime"


def make_alpha_dataset(root: Path, stems: list[str]) -> Path:
    """images/ + alpha/ (a soft-edged person box, values on the teacher's /16 grid)."""
    (root / "images").mkdir(parents=True)
    (root / "alpha").mkdir()
    rng = np.random.default_rng(1)
    for stem in stems:
        cv2.imwrite(str(root / "images" / f"{stem}.jpg"), rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))
        alpha = np.zeros((48, 40), np.uint8)
        alpha[10:40, 8:30] = 255
        alpha[10:40, 4:8] = (64, 128, 176, 224)
        cv2.imwrite(str(root / "alpha" / f"{stem}.png"), alpha)
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("portraitseg eval: error: ") and "Traceback" not in err[0]
    return err[0]


def test_alpha_dataset_reports_matting_errors_of_the_final_alpha(tiny_checkpoint: Path, tmp_path: Path,
                                                                   capsys) -> None:
    data = make_alpha_dataset(tmp_path / "soft", ["a", "b"])
    out_json = tmp_path / "a.json"
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet", "--json", str(out_json)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert all(f"soft {m}" in header for m in ("mIoU", "BF1", "SAD", "MSE", "Grad", "MAD"))
    alpha = json.loads(out_json.read_text())["alpha"]
    assert alpha["n_images"] == 2 and alpha["postprocess"]["guided"] is True
    assert all(alpha[k] > 0 for k in ("sad", "mse", "mad"))  # a random-init model is not perfect
    # The post-processing flags are predict's: the numbers are those of the alpha they give.
    plain = tmp_path / "plain.json"
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet", "--json", str(plain),
                 "--no-guided", "--no-keep-largest"]) == 0
    other = json.loads(plain.read_text())["alpha"]
    assert other["postprocess"]["guided"] is False and other["mad"] != alpha["mad"]


def test_real_alpha_set_ours_and_mediapipe(shared: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "reports"
    args = ["eval", "default", "--peers", "mediapipe_selfie_256", "--split", "train.txt",
            "--data", str(shared / "data" / "pseudo_selfie"), "--limit", "3",
            "--anchors", str(shared / "anchors"), "--quiet", "--out", str(out_dir), "--gallery", "0"]
    assert main(args) == 0
    assert "pseudo_selfie/train SAD" in capsys.readouterr().out
    nested = json.loads((out_dir / "comparison.json").read_text())
    for model in ("default", "mediapipe_selfie_256"):
        alpha = nested[model]["pseudo_selfie/train"]["alpha"]
        assert 1.0 < alpha["mad"] < 100.0 and alpha["mse"] < alpha["mad"] and alpha["grad"] > 0
    rows = (out_dir / "default" / "pseudo_selfie_train" / "per_image.csv").read_text().splitlines()
    assert rows[0].endswith(",sad,mse,grad,mad") and len(rows) == 4
    assert "SAD" in (out_dir / "default" / "pseudo_selfie_train" / "summary.md").read_text()


def test_labels_are_short_and_unique() -> None:
    labels = model_labels(["exp/portraitseg-224-fp32.onnx", "m_fp16.onnx", "default", "mediapipe_selfie_256"])
    assert labels == ["portraitseg-224-fp32", "m_fp16", "default", "mediapipe_selfie_256"]
    # Every training run has a best.pt / last.pt: the run folder is the name.
    assert model_labels(["checkpoints/runA/best.pt"]) == ["runA/best"]
    runs = ["checkpoints/runA/best.pt", "checkpoints/runB/best.pt", "checkpoints/runB/last.pt"]
    assert model_labels(runs) == ["runA/best", "runB/best", "runB/last"]
    # Same stem: the shortest end of the path that tells them apart, the suffix if the folder cannot.
    assert model_labels(["x/a/m.onnx", "y/a/m.onnx"]) == ["x/a/m", "y/a/m"]
    assert model_labels(["exp/m.onnx", "exp/m.tflite"]) == ["m.onnx", "m.tflite"]
    # A file is never labelled like a peer or 'default' that is also evaluated.
    assert model_labels(["w/default.onnx", "default"]) == ["default.onnx", "default"]


def test_models_labelled_uniquely_end_to_end(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Reproduction: runA/best.pt alone was 'best'; with runB/best.pt both got their raw path
    ('runA/best.pt') while tiny.pt got 'tiny'."""
    data = make_dataset(tmp_path / "ds", ["a"])
    for run in ("runA", "runB"):
        (tmp_path / run).mkdir()
        shutil.copy(tiny_checkpoint, tmp_path / run / "best.pt")
    out_json = tmp_path / "labels.json"
    same_file_twice = [str(tiny_checkpoint), str(tmp_path / "runA" / ".." / "tiny.pt")]
    args = ["eval", str(tmp_path / "runA" / "best.pt"), str(tmp_path / "runB" / "best.pt"), *same_file_twice,
            "--data", str(data), "--quiet", "--json", str(out_json), "--out", str(tmp_path / "rep"),
            "--gallery", "0"]
    assert main(args) == 0
    assert set(json.loads(out_json.read_text())) == {"runA/best", "runB/best", "tiny"}
    rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == ["runA/best", "runB/best", "tiny"]
    assert (tmp_path / "rep" / "runA_best" / "ds" / "summary.json").is_file()
    one = tmp_path / "one.json"
    assert main(["eval", str(tmp_path / "runA" / "best.pt"), "--data", str(data), "--quiet",
                 "--json", str(one)]) == 0
    assert json.loads(one.read_text())["model"] == "runA/best"


@pytest.mark.parametrize("value", ["nan", "2", "0", "-0.1", "inf"])
def test_threshold_outside_zero_one_is_one_line_exit_2(tiny_checkpoint: Path, tmp_path: Path, capsys,
                                                         value: str) -> None:
    """Reproduction: --threshold nan / 2 exited 0 with every pixel background (pIoU 0.000)."""
    data = make_dataset(tmp_path / "ds", ["a"])
    out_json = tmp_path / "t.json"
    assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet", "--threshold", value,
                 "--json", str(out_json)]) == 2
    line = one_error_line(capsys)
    assert "--threshold must be" in line and f"in (0, 1); got {float(value)}" in line
    assert not out_json.exists()


def test_earlier_results_are_never_clobbered(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Reproduction: a second eval with the same --json silently replaced the first result."""
    data = make_dataset(tmp_path / "ds", ["a", "b"])
    out_json, out_dir = tmp_path / "r.json", tmp_path / "rep"
    args = ["eval", str(tiny_checkpoint), "--data", str(data), "--quiet", "--json", str(out_json),
            "--out", str(out_dir)]
    assert main(args) == 0
    first_json, first_md = out_json.read_bytes(), (out_dir / "comparison.md").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"--json {out_json} exists (use --overwrite to replace it)" in line
    assert main(args[:-4] + ["--out", str(out_dir)]) == 2  # the reports alone are refused too
    assert "--out" in one_error_line(capsys)
    assert out_json.read_bytes() == first_json and (out_dir / "comparison.md").read_bytes() == first_md
    assert main([*args, "--overwrite"]) == 0
    assert out_json.read_bytes() != first_json  # timings differ from run to run
    assert not [p for p in tmp_path.rglob("*.tmp")]
    # The rule at write time (a file that appeared during the run): identical bytes are kept,
    # different ones refused before anything is written.
    from portraitseg.outfiles import OutputExistsError, write_results

    a, b = tmp_path / "w" / "a.txt", tmp_path / "w" / "b.txt"
    assert write_results({a: b"1", b: b"2"}, overwrite=False).todo.keys() == {a, b}
    assert write_results({a: b"1"}, overwrite=False).unchanged == [a]
    with pytest.raises(OutputExistsError, match="exists with different content"):
        write_results({a: b"1", b: b"changed"}, overwrite=False)
    assert b.read_bytes() == b"2"


def test_a_result_never_replaces_an_input(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    """Reproduction: `eval m.pt --json m.pt --overwrite` replaced the model file with the JSON
    summary (and a split file the same way): inputs are refused even with --overwrite."""
    data = make_dataset(tmp_path / "ds", ["a", "b"])
    (data / "val.txt").write_text("a\n")
    link = tmp_path / "link.json"
    link.symlink_to(tiny_checkpoint)
    before = {p: p.read_bytes() for p in (tiny_checkpoint, data / "val.txt")}
    base = ["eval", str(tiny_checkpoint), "--data", str(data), "--split", "val.txt", "--quiet", "--overwrite"]
    for json_path, message in ((tiny_checkpoint, f"is the input MODEL ({tiny_checkpoint})"),
                               (link, f"is the input MODEL ({tiny_checkpoint})"),
                               (data / "val.txt", f"is the input --split ({data / 'val.txt'})")):
        assert main([*base, "--json", str(json_path)]) == 2
        line = one_error_line(capsys)
        assert line == f"portraitseg eval: error: --json {json_path} {message}; refusing to overwrite it"
    assert {p: p.read_bytes() for p in before} == before


def test_json_path_that_is_a_folder_or_under_a_file(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    data = make_dataset(tmp_path / "ds", ["a"])
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path, tmp_path / "afile" / "r.json"):
        assert main(["eval", str(tiny_checkpoint), "--data", str(data), "--quiet", "--json", str(bad)]) == 2
        line = one_error_line(capsys)
        assert "--json" in line and str(bad) in line
    assert (tmp_path / "afile").read_text() == "x"


def _mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a real read-only / full file system")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


@pytest.fixture()
def small_mounts(tmp_path: Path):
    """A read-only tmpfs and a 1 MB tmpfs filled to the last few KB (unmounted afterwards)."""
    ro, full = tmp_path / "ro", tmp_path / "full"
    _mount_tmpfs(ro, "size=1m,ro")
    try:
        _mount_tmpfs(full, "size=1m")
        (full / "earlier.json").write_text('{"earlier": true}\n')
        fd = os.open(full / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass  # disk full: what we wanted
        finally:
            os.close(fd)
        yield ro, full
    finally:
        for m in (full, ro):
            subprocess.run(["umount", str(m)], capture_output=True)


def test_unwritable_json_and_out_are_one_line_errors(tiny_checkpoint: Path, tmp_path: Path, capsys,
                                                      small_mounts) -> None:
    """Reproduction: --json on a read-only folder and --out on a full disk raised tracebacks."""
    ro, full = small_mounts
    data = make_dataset(tmp_path / "ds", ["a"])
    base = ["eval", str(tiny_checkpoint), "--data", str(data), "--quiet"]
    assert main([*base, "--json", str(ro / "r.json")]) == 2
    assert "Read-only file system" in one_error_line(capsys)
    assert main([*base, "--out", str(ro / "rep")]) == 2  # refused before the evaluation
    line = one_error_line(capsys)
    assert "--out" in line and "Read-only file system" in line
    assert main([*base, "--out", str(full / "rep")]) == 2  # found out only when writing
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(full / "rep") in line
    assert main([*base, "--json", str(full / "earlier.json"), "--overwrite"]) == 2
    assert "No space left on device" in one_error_line(capsys)
    assert (full / "earlier.json").read_text() == '{"earlier": true}\n'  # the earlier result survives
    assert not [p for p in full.rglob("*.tmp")]
