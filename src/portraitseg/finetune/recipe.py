"""The fine-tune recipe: what ``portraitseg finetune`` changes in the trainer's defaults.

A fine-tune is the trainer (``portraitseg.train``) run with this recipe: its defaults here ARE
the recipe, and ``configs/finetune.yaml`` writes the same values out with the reasons (a test
keeps the two equal); ``--recipe FILE`` layers a user's own file over them, flags over that.
Kept free of torch so ``portraitseg finetune --help`` stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..commands.train import merge_config
from ..defaults import INPUT_SIZE
from ..options import Bounds, check_options, option

# The bundled model's training sets (configs/default.yaml), mixed back in so a fine-tune does not
# forget people in general; each is read through its train.txt.
BUNDLED_SETS = ["voc_person", "ccp_person", "eg1800", "pseudo_people", "pseudo_fashion", "pseudo_portrait"]

# Light augmentation (as configs/cpu_polish.yaml): a fine-tune sees the user's own kind of photo,
# and a few hundred steps are better spent on it than on distortions it will not meet.
LIGHT_AUGMENT: dict[str, Any] = {
    "zoom_in_max": 1.3, "zoom_out_max": 1.1, "aspect_jitter": 0.1, "rotate_deg": 5.0, "translate": 0.05,
    "portrait_crop_p": 0.1, "composite_p": 0.0, "brightness": 0.1, "contrast": 0.1, "saturation": 0.1,
    "hue": 0.0, "gamma": 0.1, "grayscale_p": 0.0, "blur_p": 0.05, "motion_blur_p": 0.0, "noise_p": 0.05,
}

# TrainConfig fields the recipe sets (the rest keep the trainer's defaults). finetune itself sets
# the run's own fields: caches, init weights, input size, time budget, out_dir/run, cpu_bf16.
TRAIN_OVERRIDES: dict[str, Any] = {
    "device": "cpu",
    "batch_size": 8,
    "lr": 0.0002,
    "warmup_epochs": 0.3,
    "ema_decay": 0.98,
    "channels_last": True,
    "compile": False,
    "workers": 1,
    "keep_epoch_checkpoints": 1,
    "epochs": 100,  # re-fitted to the time budget after epoch 2
    "augment": LIGHT_AUGMENT,
}


MAX_MINUTES = 7 * 24 * 60  # a week
MAX_SIZE = 16352  # the largest multiple of 32 a WebP image (the caches) can hold


@dataclass
class FinetuneRecipe:
    # At most a week: --minutes 1e308 passed here and failed only after the caches were built, as
    # the trainer's '--time-budget-s ... got inf'.
    minutes: float = option(3.0, "training time budget in minutes (caching, export and the before/after "
                            "report come on top)", bounds=Bounds(0, MAX_MINUTES, low_open=True))
    # The caches store WebP images, at most 16383 px a side: a larger --input-size failed only after
    # the data was staged, naming the cache's --size.
    input_size: int = option(INPUT_SIZE, "training input side in px, a multiple of 32; the exports run "
                             "at --export-size", bounds=Bounds(32, MAX_SIZE))
    export_size: int = option(INPUT_SIZE, "input side of the exported model (the bundled model's is 224, "
                              "so the before/after table compares like with like)",
                              bounds=Bounds(32, MAX_SIZE))
    val_fraction: float = option(0.2, "share of each DATA folder held out when no --val is given and the "
                                 "folder has no train.txt + val.txt", bounds=Bounds(0, 1, low_open=True,
                                                                                    high_open=True))
    replay_share: float = option(0.25, "share of the training images taken from the bundled model's "
                                 "training data (0 = none)", bounds=Bounds(0, 1, high_open=True))
    replay_max: int = option(300, "at most this many bundled training images are mixed in")
    replay_sets: list[str] = option(help="bundled training sets to mix in (folders of the replay root)",
                                    factory=lambda: list(BUNDLED_SETS))
    bf16: bool = option(True, "bf16 autocast on the CPU where it is native (AVX512-BF16/AMX; the trainer "
                        "falls back to fp32 elsewhere and says so); --no-bf16 always trains in fp32")
    freeze_bn: bool = option(True, "keep every BatchNorm's statistics fixed: batch statistics of a few "
                             "similar photos differ from the bundled ones (see docs/finetune.md)")
    init_weights: str = option("default", "weights to start from ('default' = the bundled model)")
    cache_quality: int = option(90, "WebP quality of the cached images", bounds=Bounds(1, 100))
    seed: int = option(0, "seed of the held-out split, the replay pick and training")
    train: dict[str, Any] = option(help="TrainConfig fields (portraitseg train --help), over the trainer's "
                                   "defaults", factory=lambda: dict(TRAIN_OVERRIDES))

    def __post_init__(self) -> None:
        check_options(self)
        for name in ("input_size", "export_size"):
            if getattr(self, name) % 32:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a multiple of 32; got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FinetuneRecipe:
        """Defaults, then ``data`` (``train`` and its ``augment`` merge key by key)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe option(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        values = dict(data)
        if "train" in values:
            if not isinstance(values["train"], dict):
                raise ValueError("recipe 'train' must be a mapping of TrainConfig fields")
            values["train"] = merge_config(copy.deepcopy(TRAIN_OVERRIDES), values["train"])
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | Path, base: dict[str, Any] | None = None) -> FinetuneRecipe:
        from ..train.config import read_yaml

        return cls.from_dict(merge_config(copy.deepcopy(base or {}), read_yaml(path)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

