"""Training end to end on a tiny real subset (64 px): loss falls, outputs, resume, DDP, config."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import copy_subset, first_stems
from portraitseg.checkpoint import load_model
from portraitseg.cli import build_parser, main
from portraitseg.commands.train import build_config
from portraitseg.data.cache import build_cache
from portraitseg.train import Trainer

SIZE = 64
MODEL = "mobile-unet-050-bilinear"
METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "lr",
    "val_loss",
    "val_acc",
    "val_miou",
    "epoch_s",
    "elapsed_s",
]
GRAPHS = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]


@pytest.fixture(scope="module")
def caches(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """48 training samples (24 hand-labelled ccp_person + 24 teacher-labelled pseudo_people)
    and 16 validation samples, cached at 64 px in a tmp folder (never in the repo)."""
    tmp = tmp_path_factory.mktemp("train_data")
    ccp, pseudo = shared_data / "ccp_person", shared_data / "pseudo_people"
    sources = [
        (copy_subset(ccp, tmp / "ccp", first_stems(ccp, "train.txt", 24)), "train.txt"),
        (copy_subset(pseudo, tmp / "pseudo", first_stems(pseudo, "train.txt", 24)), "train.txt"),
    ]
    train, _ = build_cache(sources, tmp / "train.npz", SIZE, 90)
    val_root = copy_subset(ccp, tmp / "ccp_val", first_stems(ccp, "val.txt", 16), "val.txt")
    val, _ = build_cache([(val_root, "val.txt")], tmp / "val.npz", SIZE, 90)
    return train, val


def train_args(caches: tuple[Path, Path], out: Path, epochs: int, *extra: str) -> list[str]:
    train, val = caches
    return [
        "train",
        "--train-cache", str(train),
        "--val-cache", str(val),
        "--model", MODEL,
        "--input-size", str(SIZE),
        "--epochs", str(epochs),
        "--batch-size", "8",
        "--lr", "3e-3",
        "--ema-decay", "0",
        "--device", "cpu",
        "--workers", "1",
        "--progress", "false",
        "--channels-last", "false",
        "--out-dir", str(out),
        *extra,
        # Not `--run r`: torchrun's parser would reject it as an ambiguous --run-path prefix.
        "--set", "run=r",
    ]  # fmt: skip


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


pytestmark = pytest.mark.usefixtures("torch_threads")


def test_short_training_learns_and_writes_everything(caches, tmp_path: Path) -> None:
    assert main(train_args(caches, tmp_path, 4)) == 0
    run = tmp_path / "r"
    rows = read_metrics(run)
    assert list(rows[0]) == METRIC_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < losses[0], losses
    for key in GRAPHS:
        assert (run / f"{key}.png").stat().st_size > 1000, key
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    epoch_ckpts = sorted(run.glob(f"{MODEL}-*.pt"))
    assert epoch_ckpts, list(run.iterdir())
    best_epoch = min(rows, key=lambda r: float(r["val_loss"]))
    expected = f"{MODEL}-{int(best_epoch['epoch']):03d}-{float(best_epoch['val_loss']):.2f}.pt"
    assert expected in [p.name for p in epoch_ckpts]
    model = load_model(run / "best.pt")
    with torch.no_grad():
        assert model(torch.rand(1, 3, SIZE, SIZE)).shape == (1, 1, SIZE, SIZE)
    assert load_model(run / expected).config.input_size == SIZE


def test_resume_reproduces_an_uninterrupted_run(caches, tmp_path: Path, monkeypatch) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # 2 steps per epoch: enough to exercise the optimiser state. With the EMA on (and dropout,
    # channels-last as in real runs): saving best.pt built a model from the global RNG that
    # dropout draws from, after last.pt had stored it, so the resumed epoch 2 differed.
    small = ("--limit", "16", "--ema-decay", "0.9", "--channels-last", "true")
    assert main(train_args(caches, straight, 2, *small)) == 0

    # Interrupt the second run right after epoch 1 has been checkpointed, like a crash.
    real_save = Trainer._save

    def save_then_crash(self: Trainer, epoch: int, row: dict) -> None:
        real_save(self, epoch, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_crash)
    assert main(train_args(caches, resumed, 2, *small)) == 130
    monkeypatch.undo()
    assert len(read_metrics(resumed / "r")) == 1
    assert main(train_args(caches, resumed, 2, *small, "--resume", str(resumed / "r" / "last.pt"))) == 0

    a = torch.load(straight / "r" / "last.pt", weights_only=False)
    b = torch.load(resumed / "r" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] > 0
    assert a["epoch"] == b["epoch"] == 1
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    steps_a = {s["step"].item() for s in a["optimizer"]["state"].values()}
    steps_b = {s["step"].item() for s in b["optimizer"]["state"].values()}
    assert steps_a == steps_b == {a["step"]}
    assert [r["epoch"] for r in b["history"]] == [1, 2]
    for key, value in a["ema"]["module"].items():
        assert torch.equal(value, b["ema"]["module"][key]), key
    losses = [[r["train_loss"] for r in read_metrics(run / "r")] for run in (straight, resumed)]
    assert losses[0] == losses[1]  # bit-exact, as the text of metrics.csv


def _init_file(path: Path, **overrides) -> tuple[torch.nn.Module, Path]:
    """A seeded eval-mode model with non-trivial BatchNorm statistics, saved as an --init-weights file."""
    from portraitseg.checkpoint import save_weights
    from portraitseg.models import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, dropout=0.0, **overrides)
    with torch.no_grad():
        model.train()(torch.rand(4, 3, SIZE, SIZE))
    return model.eval(), save_weights(model, path)


def _warm_started(caches, tmp_path: Path, init: Path, *extra: str) -> Trainer:
    args = train_args(caches, tmp_path / "out", 1, "--limit", "8", "--init-weights", str(init), *extra)
    return Trainer(build_config(build_parser().parse_args(args)))


def test_init_weights_from_an_upsample_head_checkpoint(caches, tmp_path: Path) -> None:
    # Fine-tuning a checkpoint trained before the sub-pixel head: the run's model starts as its
    # converted copy (and then trains and saves in today's layout).
    from portraitseg.models import to_head_kernel, to_subpixel_head

    old, init = _init_file(tmp_path / "old.pt", head="upsample", head_kernel=3)
    trainer = _warm_started(caches, tmp_path, init)
    # ... and then into today's 1x1 head.
    expected = to_head_kernel(to_subpixel_head(old), 1).state_dict()
    got = trainer.model.state_dict()
    assert trainer.model.config.head == "subpixel"
    for key, value in expected.items():
        assert torch.equal(got[key].cpu(), value), key
    trainer.fit()
    assert load_model(tmp_path / "out" / "r" / "last.pt").config.head == "subpixel"


def test_init_weights_into_another_head_kernel(caches, tmp_path: Path) -> None:
    # The 1x1 head fine-tunes from 3x3-head weights: the run starts from their converted copy.
    from portraitseg.models import to_head_kernel

    old, init = _init_file(tmp_path / "k3.pt", head_kernel=3)
    trainer = _warm_started(caches, tmp_path, init, "--set", "model_overrides.head_kernel=1")
    expected = to_head_kernel(old, 1).state_dict()
    got = trainer.model.state_dict()
    assert got["head.weight"].shape[-1] == 1
    for key, value in expected.items():
        assert torch.equal(got[key].cpu(), value), key


def test_init_weights_into_a_leaner_decoder(caches, tmp_path: Path, capsys) -> None:
    # The lean stride-2 stage (one refine conv, no final 1x1) starts from the full layout's
    # weights: every tensor it shares is copied, the dropped layers are named.
    old, init = _init_file(tmp_path / "full.pt", head_kernel=1)
    trainer = _warm_started(caches, tmp_path, init, "--set", "model_overrides.head_kernel=1",
                            "model_overrides.last_refine=1", "model_overrides.final_conv=false")
    got = trainer.model.state_dict()
    assert not any(k.startswith(("decoder.final.", "decoder.blocks.3.refine.1.")) for k in got)
    for key, value in got.items():
        assert torch.equal(value.cpu(), old.state_dict()[key]), key
    out = capsys.readouterr().out
    assert "dropped: decoder.blocks.3.refine.1.0.0" in out and "decoder.final.0" in out


def test_freeze_encoder_bn_keeps_its_statistics(caches, tmp_path: Path) -> None:
    args = train_args(caches, tmp_path / "out", 1, "--limit", "8", "--freeze-encoder-bn-epochs", "1")
    trainer = Trainer(build_config(build_parser().parse_args(args)))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith("running_mean")}
    trainer.train_epoch(0)
    after = trainer.model.state_dict()
    enc = [k for k in before if k.startswith("encoder.")]
    dec = [k for k in before if k.startswith("decoder.")]
    assert enc and dec
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert not all(torch.equal(before[k], after[k]) for k in dec)
    assert trainer.model.encoder.stem[0].weight.grad is not None  # the encoder still trains


def test_ddp_two_cpu_processes(caches, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    # A tiny time budget exercises the epoch re-fit (every rank must agree) yet keeps 2 epochs.
    cmd += [
        "-m",
        "portraitseg",
        *train_args(caches, tmp_path, 2, "--limit", "16", "--time-budget-s", "0.001"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0 and "SIGABRT" in proc.stdout + proc.stderr:
        # Seen about once in 20 runs under pytest on the 2-core VM (never in 24 direct torchrun runs):
        # a gloo worker aborted. train() now waits at a barrier before tearing the group down, after
        # which 20 runs under pytest gave no abort (too few to call it fixed), so the one retry stays;
        # real failures fail twice. The print shows in CI logs whether the retry was needed.
        print(f"DDP run aborted (SIGABRT), retrying once: {proc.stderr[-800:]}")
        shutil.rmtree(tmp_path / "r", ignore_errors=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    rows = read_metrics(tmp_path / "r")
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # one row per epoch: only rank 0 writes
    assert "x2" in proc.stdout
    load_model(tmp_path / "r" / "best.pt")


def test_yaml_config_and_set_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        yaml.safe_dump(
            {
                "train_cache": ["a.npz"],
                "epochs": 7,
                "lr": 0.01,
                "augment": {"composite_p": 0.1, "flip_p": 0.3},
            }
        )
    )
    args = build_parser().parse_args(
        ["train", "--config", str(cfg_file), "--lr", "0.002"]
        + ["--set", "augment.composite_p=0.5", "model_overrides.width=0.75", "amp=false", "limit=10"]
    )
    cfg = build_config(args)
    assert cfg.train_cache == ["a.npz"]
    assert cfg.epochs == 7
    assert cfg.lr == 0.002  # flag beats YAML
    assert cfg.augment == {"composite_p": 0.5, "flip_p": 0.3}  # --set merges into the YAML mapping
    assert cfg.model_overrides == {"width": 0.75}
    assert cfg.amp is False and cfg.limit == 10


def test_unknown_option_is_a_clear_error(tmp_path: Path, capsys) -> None:
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train_cache: [a.npz]\nepochs: 3\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown training option(s): learning_rate" in err
    assert main(["train", "--train-cache", "a.npz", "--set", "no_such=1"]) == 2
    assert "no_such" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["train", "--no-such-flag", "1"])
    assert exc.value.code == 2


# --------------------------------------------------------------------------- issue 11: run folders


def test_existing_run_is_refused_unless_resume_or_overwrite(caches, tmp_path: Path, capsys) -> None:
    small = ("--limit", "8")
    assert main(train_args(caches, tmp_path, 1, *small)) == 0
    run = tmp_path / "r"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    assert main(train_args(caches, tmp_path, 1, *small)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"{run}: run 'r' already exists" in err and "--resume" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    (run / ".last.pt.tmp").write_bytes(b"left by kill -9")
    assert main(train_args(caches, tmp_path, 1, *small, "--overwrite")) == 0
    assert len(read_metrics(run)) == 1  # started over, not appended
    assert not list(run.glob(".*.tmp"))
    assert "removed 1 temporary file(s)" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"junk, not a checkpoint", "truncated"])
def test_resume_from_a_bad_file_is_one_line(caches, tmp_path: Path, capsys, content) -> None:
    bad = tmp_path / "last.pt"
    if content == "truncated":
        torch.save({"model": torch.zeros(10_000)}, bad)
        bad.write_bytes(bad.read_bytes()[:2000])
    else:
        bad.write_bytes(content)
    assert main(train_args(caches, tmp_path, 1, "--resume", str(bad))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{bad}: not a readable PyTorch checkpoint" in err


def test_resume_honours_new_epochs(caches, tmp_path: Path, capsys) -> None:
    small = ("--limit", "8")
    assert main(train_args(caches, tmp_path, 1, *small)) == 0
    last = tmp_path / "r" / "last.pt"
    assert main(train_args(caches, tmp_path, 1, *small, "--resume", str(last), "--set", "epochs=2")) == 0
    assert "re-planned from 1 to 2 epochs" in capsys.readouterr().out
    state = torch.load(last, weights_only=False)
    assert state["total_epochs"] == 2 and [r["epoch"] for r in state["history"]] == [1, 2]
    assert main(train_args(caches, tmp_path, 1, *small, "--resume", str(last))) == 2
    assert "already trained 2 epoch(s); epochs=1 leaves nothing to do" in capsys.readouterr().err




# --------------------------------------------------------------------------- issue 17: checkpoints, metrics


def _scripted_validation(monkeypatch, losses: list[float]) -> None:
    """Trainer.validate returns ``losses[epoch]`` (by the number of epochs in the history)."""
    def validate(self: Trainer) -> dict:
        return {"val_loss": losses[len(self.history)], "val_acc": 0.5, "val_miou": 0.5}

    monkeypatch.setattr(Trainer, "validate", validate)


def test_resume_never_replaces_best_with_a_worse_model(caches, tmp_path: Path, monkeypatch) -> None:
    """Losses 0.50, 0.30, resume, 0.40: best.pt must stay epoch 2's. last.pt kept the best value
    from before its own epoch (0.50), so the resumed run took 0.40 for an improvement."""
    from portraitseg.checkpoint import load_checkpoint

    _scripted_validation(monkeypatch, [0.5, 0.3, 0.4, 0.35])
    small = ("--limit", "8")
    assert main(train_args(caches, tmp_path, 2, *small)) == 0
    run = tmp_path / "r"
    last = run / "last.pt"
    assert load_checkpoint(last)["best_val"] == 0.3
    assert main(train_args(caches, tmp_path, 2, *small, "--resume", str(last), "--epochs", "3")) == 0
    best = load_checkpoint(run / "best.pt")
    assert (best["epoch"], best["best_val"]) == (1, 0.3)
    # A last.pt as the code before the fix wrote it (stale best_val, no hash) resumes right too.
    old = dict(load_checkpoint(last), best_val=0.5, epoch=1, total_epochs=2)
    old["history"] = old["history"][:2]
    del old["sha256"]
    torch.save(old, last)
    assert main(train_args(caches, tmp_path, 2, *small, "--resume", str(last), "--epochs", "4")) == 0
    best = load_checkpoint(run / "best.pt")
    assert (best["epoch"], best["best_val"]) == (1, 0.3)
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2", "3", "4"]


KILL_DURING_SAVE = """
import os, signal, sys
import portraitseg.train.trainer as t
real = t.atomic_save
def save(obj, path):
    if path.name == "last.pt" and obj["epoch"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 before epoch 2's last.pt is written
    return real(obj, path)
t.atomic_save = save
from portraitseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_before_the_checkpoint_keeps_metrics_consistent(caches, tmp_path: Path) -> None:
    """metrics.csv got epoch 2 appended before last.pt was saved: killed in between, the resumed
    run wrote epoch 2 again. Now metrics.csv is written from last.pt's history, after it."""
    args = train_args(caches, tmp_path, 3, "--limit", "8")
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, *args], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = tmp_path / "r"
    assert [r["epoch"] for r in read_metrics(run)] == ["1"]
    assert main([*args, "--resume", str(run / "last.pt")]) == 0
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2", "3"]
    from portraitseg.checkpoint import load_checkpoint

    assert [r["epoch"] for r in load_checkpoint(run / "last.pt")["history"]] == [1, 2, 3]


def test_resume_rewrites_metrics_rows_past_the_checkpoint(caches, tmp_path: Path, capsys) -> None:
    """An epoch row without its checkpoint (left by a run killed under the old save order) is
    dropped when the run resumes, not kept beside the replayed epoch."""
    small = ("--limit", "8")
    assert main(train_args(caches, tmp_path, 1, *small)) == 0
    run = tmp_path / "r"
    with (run / "metrics.csv").open("a") as f:
        f.write("2,0.9,0.5,0.001,0.9,0.5,0.3,1.0,2.0\r\n")
    assert main(train_args(caches, tmp_path, 2, *small, "--resume", str(run / "last.pt"))) == 0
    assert "metrics.csv had 1 row(s) past last.pt" in capsys.readouterr().out
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["train_loss"] != "0.9"


def test_full_disk_is_one_line_and_a_rerun_says_what_to_do(caches, tmp_path: Path, capsys) -> None:
    """A real 12 MB tmpfs: best.pt and the epoch's weights fit, last.pt does not. Training failed
    with 'RuntimeError: [enforce fail at inline_container.cc:672]', and the rerun was refused
    pointing to --resume of a last.pt that did not exist."""
    from small_disk import tmpfs

    with tmpfs(tmp_path / "disk", "12m") as disk:
        args = train_args(caches, disk, 1, "--limit", "8")
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("last.pt: cannot write (No space left on device)") and len(err.splitlines()) == 1
        run = disk / "r"
        assert not (run / "last.pt").exists() and not list(run.glob(".*tmp*"))
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "has no last.pt to resume" in err and "--overwrite" in err and "--resume" not in err


def test_unwritable_out_dir_fails_before_loading_data(caches, tmp_path: Path, capsys) -> None:
    from small_disk import tmpfs

    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(train_args(caches, ro, 1, "--limit", "8")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write in" in err and "Read-only file system" in err


def test_resume_from_a_pt_that_runs_code_is_refused(caches, tmp_path: Path, capsys) -> None:
    from crafted_pt import write_code_running_pt

    marker = tmp_path / "PWNED"
    evil = write_code_running_pt(tmp_path / "evil.pt", marker, key="optimizer")
    assert main(train_args(caches, tmp_path, 1, "--resume", str(evil))) == 2
    err = capsys.readouterr().err.strip()
    assert "evil.pt: not a portraitseg checkpoint: loading it would run code" in err
    assert len(err.splitlines()) == 1 and not marker.exists()


def test_epochs_flag_wins_over_a_yaml_time_budget(caches, tmp_path: Path, capsys) -> None:
    """--epochs 3 with a config's time budget ran 13+ epochs (the budget re-fitted the count
    after epoch 2); here a 1 ms budget would have cut it to 2."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("time_budget_s: 0.001\n")
    assert main(["train", "--config", str(recipe), *train_args(caches, tmp_path, 3, "--limit", "8")[1:]]) == 0
    out = capsys.readouterr()
    assert "note: --epochs 3 given: training 3 epoch(s)" in out.err and "time_budget_s=0.001" in out.err
    assert [r["epoch"] for r in read_metrics(tmp_path / "r")] == ["1", "2", "3"]


def test_a_one_epoch_run_does_not_promise_a_time_budget_refit(caches, tmp_path: Path, capsys) -> None:
    """The start line said "re-fitted after epoch 2 to a 60s time budget" for a 1-epoch run."""
    assert main(train_args(caches, tmp_path, 1, "--limit", "8", "--time-budget-s", "60")) == 0
    start = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("training "))
    assert "x 1 epochs)" in start and "re-fitted" not in start


def test_progress_bars_show_the_epochs_lr_and_go_quiet_when_off(caches, tmp_path: Path, capsys) -> None:
    """The bar showed the lr of the epoch's first step (1.67e-04 while the epoch ran at 1.33e-03);
    --progress false still printed the cache-loading bars."""
    args = train_args(caches, tmp_path / "on", 1, "--limit", "24")  # 3 steps, lr rising in warm-up
    on = [a if a != "false" or args[i - 1] != "--progress" else "true" for i, a in enumerate(args)]
    assert main(on) == 0
    err = capsys.readouterr().err
    lr = float(read_metrics(tmp_path / "on" / "r")[0]["lr"])
    shown = [part.split(",")[0].rstrip("]") for part in err.split("lr=")[1:]]
    assert shown and shown[-1].startswith(f"{lr:.2e}"), (shown, lr)
    assert main(train_args(caches, tmp_path / "off", 1, "--limit", "8")) == 0
    assert "%|" not in capsys.readouterr().err


def test_no_best_pt_is_explained(caches, tmp_path: Path, monkeypatch, capsys) -> None:
    # Every score NaN: nothing improved on infinity, so there is no best.pt to name (exit 2).
    _scripted_validation(monkeypatch, [float("nan")] * 3)
    assert main(train_args(caches, tmp_path / "nan", 1, "--limit", "8")) == 2
    assert "no epoch had a finite score, so no best.pt was written" in capsys.readouterr().err
    # Resumed into another folder and not improving: says so, and it is not an error.
    _scripted_validation(monkeypatch, [0.3, 0.5])
    assert main(train_args(caches, tmp_path / "a", 1, "--limit", "8")) == 0
    last = tmp_path / "a" / "r" / "last.pt"
    assert main(train_args(caches, tmp_path / "b", 2, "--limit", "8", "--resume", str(last))) == 0
    assert f"no best.pt in {tmp_path / 'b' / 'r'}: no epoch improved" in capsys.readouterr().out
