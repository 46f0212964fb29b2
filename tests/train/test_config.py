"""One source of training defaults: TrainConfig's defaults are the recipe, configs/default.yaml
adds only run-specific fields, every flag has help, and the config module needs no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

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
