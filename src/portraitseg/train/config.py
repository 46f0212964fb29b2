"""``TrainConfig``: every training option, its default and its help text in one place.

The defaults ARE the recipe of the bundled model (batch 128, lr 0.004, 3 warm-up epochs, 300
epochs cut to a time budget); ``configs/default.yaml`` adds only what is specific to one
machine or run (:data:`RUN_FIELDS`: data paths, run name, time budget), which a test checks.
``portraitseg train`` turns each scalar field into a flag with the ``help`` metadata below.
Kept free of torch so building the CLI stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_MODEL, INPUT_SIZE
from ..options import ANY, POSITIVE, Bounds, check_options

# Fields configs/default.yaml may set: where the data is and how long this machine may train.
RUN_FIELDS = ("train_cache", "val_cache", "backgrounds", "run", "time_budget_s")


AT_LEAST_1 = Bounds(low=1)


def _opt(default: Any, help: str, bounds: Bounds | None = None) -> Any:  # noqa: A002 - argparse's name
    """A dataclass field with its CLI help text and allowed range (``options.Bounds``; numbers
    default to ``>= 0``), mutable defaults with a factory."""
    metadata = {"help": help, **({"bounds": bounds} if bounds is not None else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


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
    limit: int | None = _opt(None, "use only the first N training samples (smoke tests)", AT_LEAST_1)
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
    input_size: int = _opt(INPUT_SIZE, "training crop side in px (multiple of 32)", Bounds(low=32))
    # ----------------------------------------------------------------- optimisation
    epochs: int = _opt(300, "epochs (re-fitted after epoch 2 when --time-budget-s is set)", AT_LEAST_1)
    batch_size: int = _opt(128, "samples per step and device", AT_LEAST_1)
    lr: float = _opt(0.004, "peak AdamW learning rate", POSITIVE)
    weight_decay: float = _opt(1e-4, "AdamW weight decay (not on BatchNorm weights and biases)")
    warmup_epochs: float = _opt(3.0, "linear learning-rate warm-up, in epochs")
    schedule: str = _opt("cosine", "'cosine' decay, or 'plateau' (halve on a 3-epoch val-loss plateau)")
    min_lr_ratio: float = _opt(0.01, "cosine decays to this fraction of the peak lr", Bounds(0, 1))
    dice_weight: float = _opt(0.5, "weight of the soft Dice term next to the BCE")
    boundary_weight: float = _opt(2.0, "extra BCE weight on pixels near the mask boundary")
    ema_decay: float = _opt(
        0.999, "weight EMA decay; 0 disables. The EMA is what gets evaluated and saved as best",
        Bounds(0, 1, high_open=True),
    )
    amp: bool = _opt(True, "bf16 autocast on CUDA")
    cpu_bf16: bool = _opt(
        False,
        "bf16 autocast on the CPU too, where the CPU has native bf16 (AVX512-BF16/AMX; else it trains in "
        "fp32 and says so: the fallback kernels are several times slower). BatchNorm, loss and optimizer "
        "stay fp32; gradients checked by scripts/check_bf16_grads.py",
    )
    channels_last: bool = _opt(True, "channels-last memory format (faster convs on GPU and CPU)")
    compile: bool = _opt(False, "torch.compile the model (CUDA only: on CPU it trained with wrong gradients)")
    time_budget_s: float | None = _opt(
        None, "re-fit `epochs` after epoch 2 so training ends within this (an explicit --epochs on the "
        "command line wins over a budget from a --config file)", POSITIVE,
    )
    seed: int = _opt(0, "seed of every random stream (a resumed run replays the same draws)", ANY)
    device: str = _opt("auto", "'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    # ----------------------------------------------------------------- outputs
    run: str = _opt("run", "run name: outputs go to OUT_DIR/RUN (one folder name, no path)")
    out_dir: str = _opt("checkpoints", "folder of run folders")
    keep_epoch_checkpoints: int = _opt(3, "how many per-improvement weight files to keep", AT_LEAST_1)
    workers: int = _opt(4, "threads decoding the caches", AT_LEAST_1)
    progress: bool = _opt(True, "progress bars")
    augment: dict[str, Any] = _opt({}, "AugmentConfig fields to override, e.g. composite_p: 0.5")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError, one line naming the option, for a value no run can use.

        Called on construction and again by the Trainer, so the CLI, YAML files and the Python
        API are checked by the same code. Numbers written as strings (YAML reads ``1e-3`` as
        one) become numbers, and a single cache path becomes a one-element list, in place.
        """
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_value(_label(f.name), getattr(self, f.name), str(f.type)))
        check_options(self)  # every number against its field's Bounds: "--batch-size must be >= 1"
        if self.input_size % 32:
            raise ValueError(f"--input-size must be a multiple of 32 (the model's stride); "
                             f"got {self.input_size}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}")
        if not DEVICE.fullmatch(self.device):
            raise ValueError(f"--device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        check_run_name(self.run)
        for name in ("source_weights", "background_weights"):
            for source, weight in getattr(self, name).items():
                if not math.isfinite(weight) or weight < 0:
                    label = _label(f"{name}.{source}")
                    raise ValueError(f"{label} must be a finite number >= 0; got {weight}")
        self._check_nested()

    def _check_nested(self) -> None:
        """``model`` must be registered; ``model_overrides`` and ``augment`` may only name fields of
        MobileUNetConfig / AugmentConfig, with values of their types (these import torch)."""
        from ..data.augment import AugmentConfig
        from ..models import MobileUNetConfig, list_models

        if self.model not in list_models():
            raise ValueError(f"--model {self.model!r} is not a registered model; registered: "
                             f"{', '.join(list_models())}")
        # input_size / out_size come from --input-size: a second value would contradict it.
        self.model_overrides = check_fields("model_overrides", MobileUNetConfig, self.model_overrides,
                                            ("input_size",))
        self.augment = check_fields("augment", AugmentConfig, self.augment, ("out_size",))

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


SCHEDULES = ("cosine", "plateau")  # train/schedule.py implements them
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_run_name(run: str) -> None:
    """A run is one folder inside ``out_dir``: a name with a path in it (``../../x``, ``/tmp/x``)
    would write checkpoints outside it."""
    if not run or run in (".", "..") or "/" in run or "\\" in run or Path(run).name != run:
        raise ValueError(f"--run must be a plain folder name (no '/', '\\', '.' or '..'; --out-dir says "
                         f"where runs go); got {run!r}")


def _label(name: str) -> str:
    """How the user names an option: its flag, or ``--set a.b`` for a mapping's key."""
    return f"--set {name}" if "." in name else "--" + name.replace("_", "-")


_KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false",
          "None": "null", "list[str]": "a list of paths", "dict[str, float]": "a mapping of names to numbers",
          "dict[str, Any]": "a mapping of names to values"}


def coerce_value(name: str, value: Any, annotation: str) -> Any:
    """``value`` checked against a field's annotation text (``"int | None"``, ``"list[str]"``...),
    returned as the field should hold it; ValueError naming the option otherwise."""
    kinds = [k.strip() for k in re.split(r"\|(?![^\[]*\])", annotation)]
    for kind in kinds:
        ok, converted = _convert(value, kind)
        if ok:
            return converted
    expected = " or ".join(_KINDS.get(k, k) for k in kinds)
    raise ValueError(f"{name} must be {expected}; got {value!r}")


def _convert(value: Any, kind: str) -> tuple[bool, Any]:
    if kind == "None":
        return value is None, value
    if kind == "bool":
        return isinstance(value, bool), value
    if kind in ("int", "float"):
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as text
            try:
                value = int(value) if kind == "int" else float(value)
            except ValueError:
                return False, value
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else (int, float)):
            return False, value
        return True, value  # the range (finite, bounds) is check_options' job
    if kind == "str":
        # A path object is a path; YAML reads a run named 2024 as a number.
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        return isinstance(value, str), value
    if kind == "list[str]":
        if isinstance(value, (str, os.PathLike)):
            value = [value]  # one cache given as a plain path, not a list
        if isinstance(value, (list, tuple)):
            value = [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
        return isinstance(value, list) and all(isinstance(v, str) for v in value), value
    if kind.startswith("dict[str"):
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            return False, value
        if kind == "dict[str, float]":
            return all(_convert(v, "float")[0] for v in value.values()), {
                k: _convert(v, "float")[1] for k, v in value.items()}
        return True, dict(value)
    return True, value  # an annotation this checker does not know: leave it to the code using it


def check_fields(option: str, cls: type, values: Mapping[str, Any], reserved: tuple[str, ...] = ()) -> dict:
    """The ``option`` mapping (e.g. ``augment``) checked against the dataclass ``cls``: known
    field names (not ``reserved`` ones), values of the fields' types."""
    if not isinstance(values, Mapping):
        raise ValueError(f"{_label(option)} must be a mapping of {cls.__name__} fields; got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in reserved}
    out = {}
    for key, value in values.items():
        if key in reserved:
            raise ValueError(f"{_label(f'{option}.{key}')}: set by --input-size, not here")
        if key not in fields:
            raise ValueError(f"{_label(f'{option}.{key}')}: not a field of {cls.__name__} "
                             f"(known: {', '.join(fields)})")
        out[key] = coerce_value(_label(f"{option}.{key}"), value, str(fields[key].type))
    return out


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
