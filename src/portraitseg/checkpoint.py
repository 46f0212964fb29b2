"""Saving and loading models: training checkpoints, slim weight files and the bundled default.

Every write is atomic (a temporary file renamed into place), so a crash mid-save never leaves
a truncated ``last.pt``/``best.pt``. Files in the model's older key layout load unchanged
(:func:`portraitseg.models.upgrade_state_dict`).
"""

from __future__ import annotations

from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .models import MobileUNet, MobileUNetConfig

DEFAULT_WEIGHTS = "default.pt"


def bundled_weights_path(name: str = DEFAULT_WEIGHTS) -> Path:
    """Path of a weight file shipped inside the package (``portraitseg/weights/``)."""
    path = Path(str(resources.files("portraitseg") / "weights" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bundled weights are missing from this installation")
    return path


def config_from_dict(data: dict[str, Any]) -> MobileUNetConfig:
    known = {f.name for f in fields(MobileUNetConfig)}
    values = {k: v for k, v in data.items() if k in known}
    values.setdefault("head", "upsample")  # written before the sub-pixel head existed
    values.setdefault("head_kernel", 3)  # written before the head's kernel was a field
    return MobileUNetConfig(**values)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a hidden temporary beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    except BaseException:  # disk full, Ctrl-C, SIGTERM (SystemExit): leave no half-written temp
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_weights(model: MobileUNet, path: str | Path, half: bool = False, extra: dict | None = None) -> Path:
    """Write a slim file (config + weights, no optimiser) that ``load_model`` reads."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    payload = {"model_config": model.config.to_dict(), "model": state, **(extra or {})}
    return atomic_save(payload, path)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        data = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        # torch's own text runs to several sentences (and lines): keep its first one.
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint, truncated or not a .pt file "
            f"({exc.__class__.__name__}: {reason})"
        ) from None
    if not isinstance(data, dict) or "model" not in data or "model_config" not in data:
        raise ValueError(f"{path}: not a portraitseg checkpoint (missing 'model'/'model_config')")
    return data


def load_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A ``last.pt`` written by a training run (optimiser, EMA, RNG states included)."""
    data = load_checkpoint(path, device)
    if "optimizer" not in data:
        raise ValueError(f"{path}: weights-only file; resume needs last.pt from a training run")
    return data


def resolve_weights(spec: str | Path) -> Path:
    """``"default"`` means the bundled weights; anything else is a path."""
    return bundled_weights_path() if str(spec) == "default" else Path(spec)


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu") -> MobileUNet:
    """Build a model from a checkpoint/weights file (or ``"default"``), in eval mode, fp32."""
    data = load_checkpoint(resolve_weights(spec))
    model = MobileUNet(config_from_dict(data["model_config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["model"].items()}
    # Checkpoints written under DDP or torch.compile carry name prefixes.
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    model.load_state_dict(state)  # MobileUNet.load_state_dict also maps the older key layout
    return model.to(device).eval()
