"""``TrainConfig``: every training option, its default and its help text in one place.

The defaults ARE the recipe of the bundled model (batch 128, lr 0.004, 3 warm-up epochs, 300
epochs cut to a time budget); ``configs/default.yaml`` adds only what is specific to one
machine or run (:data:`RUN_FIELDS`: data paths, run name, time budget), which a test checks.
``portraitseg train`` turns each scalar field into a flag with the ``help`` metadata below.
Kept free of torch so building the CLI stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_MODEL, INPUT_SIZE

# Fields configs/default.yaml may set: where the data is and how long this machine may train.
RUN_FIELDS = ("train_cache", "val_cache", "backgrounds", "run", "time_budget_s")


def _opt(default: Any, help: str) -> Any:  # noqa: A002 - argparse's name for it
    """A dataclass field with its CLI help text (mutable defaults get a factory)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # ----------------------------------------------------------------- data
    train_cache: list[str] = _opt([], "training cache file(s) (.npz from `portraitseg cache`)")
    val_cache: list[str] = _opt([], "validation cache file(s); best.pt is picked by their loss")
    backgrounds: str | list[str] | None = _opt(
        None, "image cache(s) of person-free backgrounds for compositing (augment.composite_p)"
    )
    # A sample of a source with weight w is drawn w times as often as under uniform sampling.
    source_weights: dict[str, float] = _opt(
        {},
        "draw weight per training source (dataset folder name, e.g. eg1800: 3.0); unlisted sources "
        "weigh 1; empty = every sample exactly once per epoch (a permutation)",
    )
    background_weights: dict[str, float] = _opt(
        {},
        "share of background draws per background source (folder name, e.g. scenes: 0.5); "
        "empty = every background image equally likely",
    )
    limit: int | None = _opt(None, "use only the first N training samples (smoke tests)")
    # ----------------------------------------------------------------- model
    init_weights: str | None = _opt(None, "warm start from a weights file (fine-tuning)")
    init_encoder: str | None = _opt(
        None,
        "pretrained encoder from a donor file (models/donors.py): the seed .tflite (Keras channels) or "
        "the DeepLab .onnx (TF-slim channels: also --set model_overrides.divisor=4); decoder starts fresh",
    )
    freeze_encoder_bn_epochs: int = _opt(
        0,
        "keep the encoder's BatchNorm statistics fixed for the first N epochs (a donor's folded BatchNorms "
        "have unit statistics that batch statistics would replace)",
    )
    model: str = _opt(DEFAULT_MODEL, "registered model name (see portraitseg.models.list_models)")
    model_overrides: dict[str, Any] = _opt({}, "MobileUNetConfig fields to override, e.g. width: 0.75")
    input_size: int = _opt(INPUT_SIZE, "training crop side in px (multiple of 32)")
    # ----------------------------------------------------------------- optimisation
    epochs: int = _opt(300, "epochs (re-fitted after epoch 2 when --time-budget-s is set)")
    batch_size: int = _opt(128, "samples per step and device")
    lr: float = _opt(0.004, "peak AdamW learning rate")
    weight_decay: float = _opt(1e-4, "AdamW weight decay (not on BatchNorm weights and biases)")
    warmup_epochs: float = _opt(3.0, "linear learning-rate warm-up, in epochs")
    schedule: str = _opt("cosine", "'cosine' decay, or 'plateau' (halve on a 3-epoch val-loss plateau)")
    min_lr_ratio: float = _opt(0.01, "cosine decays to this fraction of the peak lr")
    dice_weight: float = _opt(0.5, "weight of the soft Dice term next to the BCE")
    boundary_weight: float = _opt(2.0, "extra BCE weight on pixels near the mask boundary")
    ema_decay: float = _opt(
        0.999, "weight EMA decay; 0 disables. The EMA is what gets evaluated and saved as best"
    )
    amp: bool = _opt(True, "bf16 autocast on CUDA")
    cpu_bf16: bool = _opt(
        False,
        "bf16 autocast on the CPU too (AVX512-BF16/AMX CPUs; BatchNorm, loss and optimizer stay fp32; "
        "gradients checked by scripts/check_bf16_grads.py)",
    )
    channels_last: bool = _opt(True, "channels-last memory format (faster convs on GPU and CPU)")
    compile: bool = _opt(False, "torch.compile the model (CUDA only: on CPU it trained with wrong gradients)")
    time_budget_s: float | None = _opt(None, "re-fit `epochs` after epoch 2 so training ends within this")
    seed: int = _opt(0, "seed of every random stream (a resumed run replays the same draws)")
    device: str = _opt("auto", "'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    # ----------------------------------------------------------------- outputs
    run: str = _opt("run", "run name: outputs go to OUT_DIR/RUN")
    out_dir: str = _opt("checkpoints", "folder of run folders")
    keep_epoch_checkpoints: int = _opt(3, "how many per-improvement weight files to keep")
    workers: int = _opt(4, "threads decoding the caches")
    progress: bool = _opt(True, "progress bars")
    augment: dict[str, Any] = _opt({}, "AugmentConfig fields to override, e.g. composite_p: 0.5")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_yaml(path))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping of TrainConfig fields in a YAML file (clear errors for a missing/odd file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of TrainConfig fields")
    return data


def field_help(f: dataclasses.Field) -> str:
    """A field's help text with its default, for ``--help``."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return f"{f.metadata.get('help', '')} (default: {default})"
