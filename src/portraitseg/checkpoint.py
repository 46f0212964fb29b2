"""Saving and loading models: training checkpoints, slim weight files and the bundled default.

Every write is atomic (serialised in memory, then a temporary file renamed into place), so a
crash or a full disk never leaves a truncated ``last.pt``/``best.pt``; a failed write is one
line naming the file. Files in the model's older key layout load unchanged
(:func:`portraitseg.models.upgrade_state_dict`).

Loading is safe and checked:

* ``torch.load(weights_only=True)``: a ``.pt`` is a pickle, and a crafted one runs any code
  it names while loading. Only tensors, plain containers and numpy's arrays and dtypes (the
  NumPy RNG state inside ``last.pt``) are allowed; a file asking for anything else is refused.
* Files written since the ``sha256`` field exists carry a hash of their whole content
  (:func:`content_hash`); a mismatch (bits flipped on disk or in a copy) is refused. Files
  without one (all files written before, the bundled weights included) still load.
* Weights must be finite and fit the ``model_config`` stored beside them.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections.abc import Iterator
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .models import MobileUNet, MobileUNetConfig
from .outfiles import write_files

DEFAULT_WEIGHTS = "default.pt"
HASH_KEY = "sha256"  # top-level entry: content_hash() of everything else in the file
# What a training state (last.pt) must hold for --resume, besides model and model_config.
TRAINING_KEYS = ("optimizer", "epoch", "step", "total_epochs", "best_val", "history", "rng")
# No trained weight or BatchNorm statistic of these models comes near this (the bundled model's
# largest is 41); bits flipped in a float's exponent give values like 1e24-1e38.
WEIGHT_LIMIT = 1e6


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


# --------------------------------------------------------------------------- content hash


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf) pairs of nested dicts/lists/tuples in a fixed order (insertion order, which
    pickling keeps), so the same content always gives the same sequence."""
    if isinstance(value, dict):
        yield f"{path}{{{len(value)}}}", None
        for key, item in value.items():
            yield from _leaves(item, f"{path}/{key!r}")
    elif isinstance(value, (list, tuple)):
        yield f"{path}{type(value).__name__}[{len(value)}]", None
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}/{i}")
    else:
        yield path, value


def content_hash(payload: dict[str, Any]) -> str:
    """SHA-256 over every tensor's dtype, shape and bytes and every other value's ``repr``, in
    file order (the :data:`HASH_KEY` entry itself excluded). Independent of devices and memory
    layout (channels-last tensors hash as their logical contents)."""
    h = hashlib.sha256()
    for path, leaf in _leaves({k: v for k, v in payload.items() if k != HASH_KEY}):
        if isinstance(leaf, torch.Tensor):
            t = leaf.detach().cpu().contiguous()
            h.update(f"{path}:tensor:{t.dtype}:{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(leaf, np.ndarray) and not leaf.dtype.hasobject:
            h.update(f"{path}:array:{leaf.dtype.str}:{leaf.shape}\n".encode())
            h.update(np.ascontiguousarray(leaf).view(np.uint8).reshape(-1))
        else:
            h.update(f"{path}={leaf!r}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- writing


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to memory, then ``outfiles.write_files`` (temporary file + rename; an OS
    error is one line naming the file). A dict gets
    its :func:`content_hash` under :data:`HASH_KEY`.

    Why via memory: ``torch.save`` to a file on a full disk fails inside its zip writer with
    "RuntimeError: [enforce fail at inline_container.cc]", which names neither the file nor the
    reason; a plain write fails with ENOSPC."""
    if isinstance(obj, dict):
        obj = {**obj, HASH_KEY: content_hash(obj)}
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_files({Path(path): buffer.getbuffer().tobytes()})
    return Path(path)


def save_weights(model: MobileUNet, path: str | Path, half: bool = False, extra: dict | None = None) -> Path:
    """Write a slim file (config + weights, no optimiser) that ``load_model`` reads."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    payload = {"model_config": model.config.to_dict(), "model": state, **(extra or {})}
    return atomic_save(payload, path)


# --------------------------------------------------------------------------- reading


EXPORTED_SUFFIXES = {".onnx": "ONNX", ".tflite": "TFLite"}


def _numpy_globals() -> list[Any]:
    """What numpy arrays and dtypes unpickle through (``last.pt`` holds NumPy's RNG state): array
    reconstruction from raw bytes and dtype construction, none of which can run other code."""
    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed the module
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype,
            *(getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType"))]


def _first_sentence(exc: BaseException) -> str:
    # torch's own text runs to several sentences (and lines): keep its first one.
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else ""


def _torch_load(path: Path, device: str | torch.device) -> Any:
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found or "weights_only" in str(exc).lower():
            what = found.group(1) if found else "an object outside tensors and plain containers"
            raise ValueError(
                f"{path}: not a portraitseg checkpoint: loading it would run code ({what}); refused "
                "(only load .pt files from sources you trust)"
            ) from None
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({_first_sentence(exc)})") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint, truncated or not a .pt file "
            f"({exc.__class__.__name__}: {_first_sentence(exc)})"
        ) from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A portraitseg ``.pt`` (slim weights or a training state), checked: no code runs, its
    content hash (when it has one) matches, its weights are finite."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        # Not a pickle at all: torch's legacy reader would call it one asking for code.
        raise ValueError(f"{path}: an exported {EXPORTED_SUFFIXES[path.suffix.lower()]} model, not a .pt "
                         "checkpoint: give 'default' or the .pt it was exported from (predict, eval, serve "
                         "and video run exported files as they are)")
    data = _torch_load(path, device)
    if not isinstance(data, dict) or "model" not in data or "model_config" not in data:
        what = "a bare state_dict? " if isinstance(data, dict) and data and "model" not in data else ""
        raise ValueError(f"{path}: not a portraitseg checkpoint ({what}missing 'model'/'model_config')")
    if not isinstance(data["model"], dict) or not isinstance(data["model_config"], dict) or not all(
        isinstance(v, torch.Tensor) for v in data["model"].values()
    ):
        raise ValueError(f"{path}: not a portraitseg checkpoint ('model' is not a mapping of tensors or "
                         "'model_config' not a mapping)")
    stored = data.get(HASH_KEY)
    if stored is not None and stored != content_hash(data):
        raise ValueError(f"{path}: corrupted checkpoint: its content does not match the sha256 stored "
                         "when it was written (damaged on disk or in a copy); use another copy")
    check_weights(data["model"], path)
    return data


def check_weights(state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Refuse NaN/inf and absurd magnitudes (over :data:`WEIGHT_LIMIT`) in a state dict: a run
    that diverged, or a file damaged before content hashes existed."""
    for key, value in state.items():
        if not value.is_floating_point() or value.numel() == 0:
            continue
        if not torch.isfinite(value).all():
            raise ValueError(f"{where}: weights are not finite (NaN/inf in {key}): a diverged run or a "
                             "damaged file")
        peak = float(value.abs().max())
        if peak > WEIGHT_LIMIT:
            raise ValueError(f"{where}: {key} holds a value of {peak:.3g}, far beyond any trained weight "
                             f"(limit {WEIGHT_LIMIT:g}): the file is damaged")


def load_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """A ``last.pt`` written by a training run (optimiser, EMA, RNG states included)."""
    data = load_checkpoint(path, device)
    if "optimizer" not in data:
        raise ValueError(f"{path}: weights-only file; resume needs last.pt from a training run")
    missing = [k for k in TRAINING_KEYS if k not in data]
    if missing:
        raise ValueError(f"{path}: incomplete training state (missing {', '.join(missing)}); resume needs a "
                         "last.pt written by `portraitseg train`")
    return data


def resolve_weights(spec: str | Path) -> Path:
    """``"default"`` means the bundled weights; anything else is a path."""
    return bundled_weights_path() if str(spec) == "default" else Path(spec)


def model_from_config(config: dict[str, Any], path: str | Path) -> MobileUNet:
    """The model a file's ``model_config`` describes (a bad config is one line naming the file)."""
    try:
        return MobileUNet(config_from_dict(config))
    except Exception as exc:  # unknown values fail in the layers' constructors
        reason = _first_sentence(exc)
        raise ValueError(f"{path}: model_config in the file cannot build a model ({reason})") from None


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model (another config, a
    damaged file) are one line naming the file and the first mismatch."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        detail = detail if len(detail) <= 160 else detail[:157] + "..."  # missing keys: hundreds of names
        raise ValueError(f"{path}: weights do not fit the model_config stored with them ({detail})") from None


def load_model(spec: str | Path = "default", device: str | torch.device = "cpu") -> MobileUNet:
    """Build a model from a checkpoint/weights file (or ``"default"``), in eval mode, fp32."""
    path = resolve_weights(spec)
    data = load_checkpoint(path)
    model = model_from_config(data["model_config"], path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["model"].items()}
    # Checkpoints written under DDP or torch.compile carry name prefixes.
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    load_weights(model, state, path)  # MobileUNet.load_state_dict also maps the older key layout
    return model.to(device).eval()
