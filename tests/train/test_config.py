"""One source of training defaults: TrainConfig's defaults are the recipe, configs/default.yaml
adds only run-specific fields, every flag has help, and the config module needs no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portraitseg.cli import build_parser
from portraitseg.commands.train import build_config
from portraitseg.defaults import INPUT_SIZE
from portraitseg.train.config import RUN_FIELDS, TrainConfig

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "default.yaml"
# configs/default.yaml before the defaults moved into TrainConfig: the same run must come out.
OLD_RECIPE = {
    "train_cache": [".carry/train224.npz"],
    "val_cache": [".carry/val224.npz"],
    "backgrounds": ".carry/bg224.npz",
    "model": "mobile-unet-050-bilinear",
    "input_size": 224,
    "batch_size": 128,
    "lr": 0.004,
    "weight_decay": 0.0001,
    "warmup_epochs": 3,
    "schedule": "cosine",
    "dice_weight": 0.5,
    "boundary_weight": 2.0,
    "ema_decay": 0.999,
    "epochs": 300,
    "time_budget_s": 470,
    "run": "default",
}
OLD_RECIPE_AUGMENT = {"composite_p": 0.35, "portrait_crop_p": 0.25}


def test_recipe_yaml_sets_only_run_specific_fields() -> None:
    data = yaml.safe_load(RECIPE.read_text())
    assert set(data) <= set(RUN_FIELDS), sorted(set(data) - set(RUN_FIELDS))


def test_recipe_gives_the_same_config_as_before() -> None:
    cfg = build_config(build_parser().parse_args(["train", "--config", str(RECIPE)]))
    old = TrainConfig.from_dict({k: v for k, v in OLD_RECIPE.items()})
    assert cfg == old
    # The old YAML's augment block only repeated AugmentConfig's defaults.
    from portraitseg.data.augment import AugmentConfig

    assert dataclasses.replace(AugmentConfig(), **OLD_RECIPE_AUGMENT) == AugmentConfig()


def test_one_input_size_everywhere() -> None:
    import inspect

    from portraitseg.data import cache
    from portraitseg.data.augment import AugmentConfig
    from portraitseg.models import MobileUNetConfig

    assert INPUT_SIZE == 224
    assert TrainConfig().input_size == MobileUNetConfig().input_size == AugmentConfig().out_size == INPUT_SIZE
    for fn in (cache.build_cache, cache.build_image_cache):
        assert inspect.signature(fn).parameters["size"].default == INPUT_SIZE
    args = build_parser().parse_args(["cache", "out.npz", "--images", "x"])
    assert args.size == INPUT_SIZE


def test_every_train_flag_has_help() -> None:
    parser = build_parser(only="train")
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    for action in sub._actions:
        assert action.help, action.option_strings
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name


def test_config_module_does_not_import_torch() -> None:
    code = (
        "import sys; import portraitseg.train.config, portraitseg.commands.train; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


CPU_RECIPE = REPO / "configs" / "cpu_finetune.yaml"
# The stage-4/5 command as MODEL_CARD.md records it, flag by flag, before the recipe moved into
# configs/cpu_finetune.yaml: the layered configs must give the same run.
STAGE5_FLAGS = [
    "--config", str(RECIPE), "--backgrounds", ".carry/bg224.npz", "--device", "cpu", "--workers", "2",
    "--channels-last", "true", "--compile", "false", "--progress", "false", "--batch-size", "64",
    "--ema-decay", "0.998", "--run", "cpu12_k1", "--init-weights", "src/portraitseg/weights/default.pt",
    "--input-size", "224", "--lr", "0.0004", "--warmup-epochs", "0.5", "--epochs", "100",
    "--time-budget-s", "3600", "--set", "source_weights.eg1800=2.0", "source_weights.pseudo_portrait=2.0",
    "source_weights.voc_person=2.0", "background_weights.scenes=0.6", "background_weights.textures=0.4",
    "augment.composite_p=0.3", "augment.composite_texture_frac=0.6", "augment.portrait_crop_p=0.2",
]


def _config(argv: list[str]) -> TrainConfig:
    return build_config(build_parser().parse_args(["train", *argv]))


def test_cpu_recipe_gives_the_stage5_run() -> None:
    layered = _config(["--config", str(RECIPE), "--config", str(CPU_RECIPE), "--run", "cpu12_k1",
                       "--time-budget-s", "3600", "--init-weights", "src/portraitseg/weights/default.pt"])
    assert layered == _config(STAGE5_FLAGS)


def test_later_config_wins_and_mappings_merge(tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("lr: 0.1\nbatch_size: 8\naugment: {composite_p: 0.1, flip_p: 0.2}\n")
    second.write_text("lr: 0.2\naugment: {composite_p: 0.3}\nsource_weights: {eg1800: 3}\n")
    cfg = _config(["--config", str(first), "--config", str(second), "--set", "augment.hue=0"])
    assert cfg.lr == 0.2 and cfg.batch_size == 8
    assert cfg.augment == {"composite_p": 0.3, "flip_p": 0.2, "hue": 0}
    assert cfg.source_weights == {"eg1800": 3}


def _script_command(tmp_path: Path, script: str, *args: str) -> list[str]:
    """The `python -m portraitseg train ...` arguments a recipe script runs (a stand-in python
    on PATH records them instead of training)."""
    import os

    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake.chmod(0o755)
    out = tmp_path / "args.txt"
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}", "ARGS_OUT": str(out)}
    subprocess.run(["bash", str(REPO / "scripts" / script), *args], cwd=REPO, env=env, check=True)
    argv = out.read_text().splitlines()
    assert argv[:3] == ["-m", "portraitseg", "train"], argv[:3]
    return argv[3:]


def test_train_cpu_script_runs_the_recipe_and_passes_flags_on(tmp_path: Path) -> None:
    argv = _script_command(tmp_path, "train_cpu.sh", "cpu12_k1", "3600")
    assert _config(argv) == _config(STAGE5_FLAGS)
    argv = _script_command(tmp_path / "2", "train_cpu.sh", "r", "60", "--lr", "0.0002",
                           "--set", "augment.composite_p=0.15")
    cfg = _config(argv)
    assert (cfg.run, cfg.time_budget_s, cfg.lr) == ("r", 60, 0.0002)
    assert cfg.augment == {"composite_p": 0.15, "composite_texture_frac": 0.6, "portrait_crop_p": 0.2}


# Stage 6 as it ran (the stage-5 flags with a lower lr and near-clean augmentation, MODEL_CARD.md).
STAGE6_FLAGS = [*STAGE5_FLAGS, "--lr", "0.0002", "--warmup-epochs", "0.3", "--set", *(
    f"augment.{k}={v}" for k, v in {
        "zoom_in_max": 1.15, "zoom_out_max": 1.05, "aspect_jitter": 0.05, "rotate_deg": 0, "translate": 0.02,
        "portrait_crop_p": 0.1, "composite_p": 0.0, "brightness": 0.05, "contrast": 0.05, "saturation": 0.05,
        "hue": 0.0, "gamma": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "motion_blur_p": 0.0, "noise_p": 0.0,
    }.items()
)]


def test_polish_recipe_gives_the_stage6_run(tmp_path: Path) -> None:
    argv = _script_command(tmp_path, "train_cpu.sh", "cpu12_k1", "3600", "--config",
                           str(REPO / "configs" / "cpu_polish.yaml"))
    cfg = _config(argv)
    assert cfg == _config(STAGE6_FLAGS)
    assert cfg.augment["composite_p"] == 0.0 and cfg.augment["composite_texture_frac"] == 0.6


# --------------------------------------------------------------------------- issue 17: one validation


@pytest.mark.parametrize(("argv", "message"), [
    (["--batch-size", "-4"], "--batch-size must be >= 1; got -4"),
    (["--batch-size", "0"], "--batch-size must be >= 1; got 0"),
    (["--epochs", "0"], "--epochs must be >= 1; got 0"),
    (["--input-size", "100"], "--input-size must be a multiple of 32"),
    (["--lr", "nan"], "--lr must be a finite number > 0; got nan"),
    (["--set", "epochs=abc"], "--epochs must be a whole number; got 'abc'"),
    (["--set", "augment.nosuch=1"], "--set augment.nosuch: not a field of AugmentConfig"),
    (["--set", "augment.flip_p=often"], "--set augment.flip_p must be a number; got 'often'"),
    (["--set", "model=nosuch"], "--model 'nosuch' is not a registered model"),
    (["--set", "model_overrides.input_size=96"], "model_overrides.input_size: set by --input-size"),
    (["--set", "source_weights.eg1800=-1"], "--set source_weights.eg1800 must be a finite number >= 0"),
    (["--run", "../../x"], "--run must be a plain folder name"),
    (["--set", "run=/tmp/x"], "--run must be a plain folder name"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N; got 'gpu'"),
])
def test_bad_options_are_one_line_naming_the_option(argv: list[str], message: str, tmp_path: Path,
                                                    capsys) -> None:
    from portraitseg.cli import main

    assert main(["train", "--train-cache", "a.npz", "--out-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_the_library_validates_the_same_way() -> None:
    # Python API users get the same checks as the CLI (TrainConfig validates when made).
    with pytest.raises(ValueError, match="--batch-size must be >= 1"):
        TrainConfig(batch_size=0)
    cfg = TrainConfig(lr="1e-3", train_cache="one.npz", run=2024)  # type: ignore[arg-type]
    assert (cfg.lr, cfg.train_cache, cfg.run) == (0.001, ["one.npz"], "2024")
    cfg.epochs = -1  # changed after it was made: the Trainer validates again
    with pytest.raises(ValueError, match="--epochs must be >= 1"):
        cfg.validate()


def test_one_cache_given_as_a_string_is_a_list() -> None:
    # `--set train_cache=tr.npz` read the string as a list of one-letter file names.
    assert _config(["--set", "train_cache=tr.npz", "val_cache=va.npz"]).train_cache == ["tr.npz"]


def test_cuda_without_cuda_is_one_line(tmp_path: Path, capsys) -> None:
    import torch

    from portraitseg.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--train-cache", "a.npz", "--out-dir", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--device cuda: CUDA is not available here" in err and len(err.splitlines()) == 1


def test_explicit_epochs_drop_a_config_files_time_budget(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("time_budget_s: 470\nepochs: 300\n")
    assert _config(["--config", str(recipe)]).time_budget_s == 470  # no flag: the recipe's budget
    cfg = _config(["--config", str(recipe), "--epochs", "3"])
    assert (cfg.epochs, cfg.time_budget_s) == (3, None)
    assert "note: --epochs 3 given: training 3 epoch(s)" in capsys.readouterr().err
    both = _config(["--config", str(recipe), "--set", "epochs=3", "--time-budget-s", "60"])
    assert (both.epochs, both.time_budget_s) == (3, 60)  # both on the command line: the budget re-fits
