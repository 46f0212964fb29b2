"""Checkpoint I/O: slim weights round trip, fp16, the bundled default, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crafted_pt import write_code_running_pt
from portraitseg.checkpoint import bundled_weights_path, load_checkpoint, load_model, save_weights
from portraitseg.models import DEFAULT_MODEL, MobileUNet, create_model
from small_disk import tmpfs


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
    # Resuming needs every part of the training state, and says which is missing.
    with pytest.raises(ValueError, match="last.pt: incomplete training state .missing epoch, step, total"):
        load_training_state(tmp_path / "last.pt")
    state.update(epoch=0, step=1, total_epochs=2, best_val=1.0, history=[], rng={})
    torch.save(state, tmp_path / "last.pt")
    assert load_training_state(tmp_path / "last.pt")["optimizer"] == {}


# --------------------------------------------------------------------------- issue 17: safe, checked loading


def _old_training_state(model: MobileUNet) -> dict:
    """A last.pt exactly as Trainer.state wrote it before content hashes (commit a278678): every
    key, the AdamW state after a step, and the RNG states (numpy's is an ndarray, which a
    weights-only load must allow)."""
    import random
    from dataclasses import asdict

    import numpy as np

    from portraitseg.train import TrainConfig
    from portraitseg.train.ema import ModelEMA
    from portraitseg.train.trainer import build_optimizer

    ema = ModelEMA(model, 0.99)
    opt = build_optimizer(model.train(), 1e-3, 1e-4)
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    opt.step()
    ema.update()
    row = {"epoch": 1, "train_loss": 0.9, "train_acc": 0.5, "lr": 1e-3, "val_loss": 0.8, "val_acc": 0.6,
           "val_miou": 0.4, "epoch_s": 1.5, "elapsed_s": 1.6}
    return {
        "model_config": model.config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": opt.state_dict(), "plateau": None, "epoch": 0, "step": 1, "total_epochs": 3,
        "best_val": float("inf"), "history": [row],
        "train_config": asdict(TrainConfig(train_cache=["a.npz"])),
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": None},
    }


def test_files_written_before_hashes_still_load(model: MobileUNet, tmp_path: Path) -> None:
    """The HARD constraint of issue 17: last.pt/best.pt/slim weights written by the code before
    this change (no sha256, numpy RNG state inside) load, and the bundled default too."""
    from portraitseg.checkpoint import HASH_KEY, load_training_state

    state = _old_training_state(model)
    last = tmp_path / "last.pt"
    torch.save(state, last)  # the old atomic_save: torch.save to a temporary, renamed
    torch.save({"model_config": model.config.to_dict(), "model": model.state_dict(), "epoch": 1,
                "val": state["history"][0]}, tmp_path / "slim.pt")
    loaded = load_training_state(last)
    assert HASH_KEY not in loaded and loaded["rng"]["numpy"][1].dtype.name == "uint32"
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    for path in (last, tmp_path / "slim.pt"):
        assert torch.equal(load_model(path).head.weight, model.head.weight)
    assert isinstance(load_model("default"), MobileUNet)  # the bundled file predates hashes


def test_a_pt_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    from portraitseg.checkpoint import load_training_state

    marker = tmp_path / "PWNED"
    evil = write_code_running_pt(tmp_path / "evil.pt", marker)
    for load in (load_model, load_training_state):
        with pytest.raises(ValueError, match=r"evil.pt: not a portraitseg checkpoint: loading it would "
                                             r"run code \((posix|nt).system\)") as info:
            load(evil)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def _flip_bytes_of(path: Path, tensor: torch.Tensor, count: int = 256) -> None:
    """XOR ``count`` bytes of ``tensor``'s stored data in ``path`` (as a bad disk or copy would)."""
    raw = bytearray(path.read_bytes())
    start = raw.find(tensor.detach().contiguous().numpy().tobytes()[:64])
    assert start > 0
    for i in range(start, start + count):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_damaged_file_is_refused_by_its_content_hash(model: MobileUNet, tmp_path: Path) -> None:
    path = save_weights(model, tmp_path / "w.pt")
    assert len(load_checkpoint(path)["sha256"]) == 64
    weight = model.decoder.blocks[0].refine[0][1][0].weight
    _flip_bytes_of(path, weight)
    assert not torch.equal(torch.load(path)["model"]["decoder.blocks.0.refine.0.1.0.weight"], weight)
    with pytest.raises(ValueError, match="w.pt: corrupted checkpoint: its content does not match the sha256"):
        load_model(path)


def test_a_damaged_file_without_hash_is_refused_by_its_values(model: MobileUNet, tmp_path: Path) -> None:
    # Files from before hashes: a float whose exponent bits flipped reads as ~1e24, NaN or inf.
    for value, reason in ((2.4e24, "holds a value of 2.4e\\+24, far beyond"), (float("nan"), "not finite")):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["head.weight"].view(-1)[3] = value
        path = tmp_path / "old.pt"
        torch.save({"model_config": model.config.to_dict(), "model": state}, path)
        with pytest.raises(ValueError, match=f"old.pt: .*{reason}"):
            load_model(path)


def test_hash_is_independent_of_memory_layout(model: MobileUNet) -> None:
    from portraitseg.checkpoint import content_hash

    plain = {"model": model.state_dict(), "n": 1}
    cl = {"model": {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v
                    for k, v in model.state_dict().items()}, "n": 1}
    assert content_hash(plain) == content_hash(cl)
    assert content_hash(plain) != content_hash({**plain, "n": 2})


def test_weights_that_do_not_fit_their_config_are_one_line(model: MobileUNet, tmp_path: Path) -> None:
    path = tmp_path / "mismatch.pt"
    config = dict(model.config.to_dict(), width=0.75)  # config says 0.75, weights are 0.35
    torch.save({"model_config": config, "model": model.state_dict()}, path)
    with pytest.raises(ValueError, match="mismatch.pt: weights do not fit the model_config stored") as info:
        load_model(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300
    torch.save({"model_config": dict(config, decoder="nosuch"), "model": model.state_dict()}, path)
    with pytest.raises(ValueError, match="mismatch.pt: model_config in the file cannot build a model"):
        load_model(path)


def test_a_full_disk_is_one_line_and_leaves_nothing(model: MobileUNet, tmp_path: Path) -> None:
    """A real 1 MB tmpfs: torch.save straight to it failed with 'RuntimeError: [enforce fail at
    inline_container.cc:672]', naming neither the file nor the reason."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        big = create_model("mobile-unet-100-bilinear")  # ~2.5 MB of weights
        with pytest.raises(ValueError, match=r"last.pt: cannot write \(No space left on device\)") as info:
            save_weights(big, disk / "last.pt")
        assert "\n" not in str(info.value)
        assert list(disk.iterdir()) == []
