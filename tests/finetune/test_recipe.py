"""The fine-tune recipe: configs/finetune.yaml is the built-in defaults written out; layering,
flags and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from portraitseg.finetune.recipe import FinetuneRecipe
from portraitseg.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def test_configs_finetune_yaml_is_the_built_in_recipe() -> None:
    assert FinetuneRecipe.from_yaml(REPO / "configs" / "finetune.yaml") == FinetuneRecipe()


def test_recipe_train_fields_are_valid_train_config_fields() -> None:
    cfg = TrainConfig.from_dict({**FinetuneRecipe().train, "train_cache": ["x.npz"]})
    assert cfg.batch_size == 8 and cfg.augment["composite_p"] == 0.0


def test_a_users_recipe_layers_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("minutes: 10\ntrain:\n  lr: 0.0001\n  augment: {hue: 0.02}\n")
    recipe = FinetuneRecipe.from_yaml(path)
    assert recipe.minutes == 10 and recipe.train["lr"] == 0.0001
    assert recipe.train["batch_size"] == 8  # kept from the built-in recipe
    assert recipe.train["augment"]["hue"] == 0.02 and recipe.train["augment"]["composite_p"] == 0.0


@pytest.mark.parametrize("data, message", [
    ({"minutes": 0}, r"--minutes must be in \(0, 10080\]; got 0"),
    # passed, and failed only after the caches were built, as '--time-budget-s ... got inf'
    ({"minutes": 1e308}, r"--minutes must be in \(0, 10080\]; got 1e\+308"),
    ({"input_size": 100}, "--input-size must be a multiple of 32"),
    # failed after the data was staged, as the cache's '--size must be at most 16383'
    ({"input_size": 99968}, r"--input-size must be in \[32, 16352\]; got 99968"),
    ({"val_fraction": 1.0}, "--val-fraction must be in"),
    ({"replay_share": -0.1}, "--replay-share must be in"),
    ({"speed": 3}, "unknown recipe option"),
])
def test_bad_values_are_one_line_errors(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FinetuneRecipe.from_dict(data)
