"""Checkpoint I/O: slim weights round trip, fp16, the bundled default, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from portraitseg.checkpoint import bundled_weights_path, load_checkpoint, load_model, save_weights
from portraitseg.models import DEFAULT_MODEL, MobileUNet, create_model


@pytest.fixture
def model() -> MobileUNet:
    torch.manual_seed(0)
    m = create_model("mobile-unet-035-transpose", dropout=0.0)
    # Non-default BN statistics, so a loader that forgot buffers would be caught.
    with torch.no_grad():
        m.train()(torch.rand(2, 3, 64, 64))
    return m.eval()


def test_round_trip_is_exact(model: MobileUNet, tmp_path: Path) -> None:
    path = save_weights(model, tmp_path / "sub" / "w.pt", extra={"epoch": 3})
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert load_checkpoint(path)["epoch"] == 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_fp16_file_is_smaller_and_loads_as_fp32(model: MobileUNet, tmp_path: Path) -> None:
    full = save_weights(model, tmp_path / "full.pt")
    half = save_weights(model, tmp_path / "half.pt", half=True)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    stored = load_checkpoint(half)["model"]
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = load_model(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_ddp_prefixed_state_loads(model: MobileUNet, tmp_path: Path) -> None:
    path = tmp_path / "ddp.pt"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_config": model.config.to_dict(), "model": state}, path)
    assert torch.equal(load_model(path).head.weight, model.head.weight)


def test_default_loads_the_bundled_weights() -> None:
    path = bundled_weights_path()
    assert path.is_file() and path.name == "default.pt"
    model = load_model("default")
    assert model.config == load_model(path).config
    assert isinstance(model, MobileUNet)
    assert model.config.width == create_model(DEFAULT_MODEL).config.width
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64) and torch.isfinite(out).all()


def test_not_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_model(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="other.pt: not a portraitseg checkpoint"):
        load_model(other)
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint"):
        load_model(tmp_path / "missing.pt")


def test_checkpoint_without_a_head_field_loads_the_upsample_head(tmp_path: Path) -> None:
    # Files written before MobileUNetConfig.head existed have the full-resolution head.
    old = create_model(DEFAULT_MODEL, head="upsample", head_kernel=3).eval()
    config = {k: v for k, v in old.config.to_dict().items() if k != "head"}
    path = tmp_path / "old.pt"
    torch.save({"model_config": config, "model": old.state_dict()}, path)
    loaded = load_model(path)
    assert loaded.config.head == "upsample"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))


def test_atomic_save_replaces_in_one_step_and_leaves_no_temporary(tmp_path: Path) -> None:
    from portraitseg.checkpoint import atomic_save

    path = atomic_save({"a": torch.ones(2)}, tmp_path / "run" / "last.pt")
    atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path)["a"], torch.zeros(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_resume_needs_a_training_state(model: MobileUNet, tmp_path: Path) -> None:
    from portraitseg.checkpoint import load_training_state

    weights = save_weights(model, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="weights-only file; resume needs last.pt"):
        load_training_state(weights)
    state = {"model_config": model.config.to_dict(), "model": model.state_dict(), "optimizer": {}}
    torch.save(state, tmp_path / "last.pt")
    assert load_training_state(tmp_path / "last.pt")["optimizer"] == {}
