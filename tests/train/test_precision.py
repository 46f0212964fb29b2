"""bf16 training on the CPU: BatchNorm really runs in fp32, the state dict is unchanged, and a short
run on real data learns as well as the same run in fp32 (the long A/B is in MODEL_CARD.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import copy_subset, first_stems
from portraitseg.data.cache import build_cache
from portraitseg.models import create_model
from portraitseg.train import Trainer, precision
from portraitseg.train.config import TrainConfig
from portraitseg.train.precision import autocast_context, keep_batchnorm_fp32, use_bf16

SIZE = 64


def test_batchnorm_runs_in_fp32_and_convs_in_bf16_under_cpu_autocast() -> None:
    torch.manual_seed(0)
    model = create_model("mobile-unet-050-bilinear").train()
    keys = list(model.state_dict())
    keep_batchnorm_fp32(keep_batchnorm_fp32(model))  # idempotent: one hook per BatchNorm
    assert list(model.state_dict()) == keys
    seen: dict[str, set[torch.dtype]] = {"bn_in": set(), "bn_out": set(), "conv_out": set()}
    def on_norm(_m: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen["bn_in"].add(args[0].dtype)
        seen["bn_out"].add(out.dtype)

    def on_conv(_m: torch.nn.Module, _args: tuple, out: torch.Tensor) -> None:
        seen["conv_out"].add(out.dtype)

    hooks = []
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert len(m._forward_pre_hooks) == 1
            hooks.append(m.register_forward_hook(on_norm))
        elif isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
    x = torch.rand(2, 3, SIZE, SIZE)
    with autocast_context(torch.device("cpu"), True):
        logits = model(x)
    for h in hooks:
        h.remove()
    assert seen["bn_in"] == {torch.float32} and seen["bn_out"] == {torch.float32}
    assert seen["conv_out"] == {torch.bfloat16}
    logits.float().mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_use_bf16_only_where_asked_and_native() -> None:
    assert use_bf16(torch.device("cpu"), amp=True, cpu_bf16=True, native=True)
    assert not use_bf16(torch.device("cpu"), amp=True, cpu_bf16=True, native=False)
    assert not use_bf16(torch.device("cpu"), amp=True, cpu_bf16=False, native=True)
    assert use_bf16(torch.device("cpu"), amp=False, cpu_bf16=True) == precision.cpu_has_native_bf16()
    assert use_bf16(torch.device("cuda"), amp=True, cpu_bf16=False)
    assert not use_bf16(torch.device("cuda"), amp=False, cpu_bf16=True)


@pytest.fixture(scope="module")
def caches(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("bf16_data")
    ccp = shared_data / "ccp_person"
    train_root = copy_subset(ccp, tmp / "ccp", first_stems(ccp, "train.txt", 32))
    train, _ = build_cache([(train_root, "train.txt")], tmp / "train.npz", SIZE, 90)
    val_root = copy_subset(ccp, tmp / "ccp_val", first_stems(ccp, "val.txt", 16), "val.txt")
    val, _ = build_cache([(val_root, "val.txt")], tmp / "val.npz", SIZE, 90)
    return train, val


def _run(caches: tuple[Path, Path], out: Path, cpu_bf16: bool) -> list[dict[str, float]]:
    train, val = caches
    cfg = TrainConfig(
        train_cache=[str(train)], val_cache=[str(val)], input_size=SIZE, epochs=6, batch_size=8, lr=3e-3,
        warmup_epochs=0.5, ema_decay=0, device="cpu", workers=1, progress=False, channels_last=True,
        out_dir=str(out), run="r", cpu_bf16=cpu_bf16,
    )  # fmt: skip
    trainer = Trainer(cfg)
    assert trainer.bf16 is cpu_bf16
    trainer.fit()
    return trainer.history


def test_cpu_without_native_bf16_trains_in_fp32_and_says_so(
    caches, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    train, val = caches
    cfg = TrainConfig(train_cache=[str(train)], val_cache=[str(val)], input_size=SIZE, device="cpu",
                      workers=1, progress=False, out_dir=str(tmp_path), cpu_bf16=True)
    assert Trainer(cfg).bf16 is False
    # One note for train --cpu-bf16 and finetune's bf16 default alike: it named train's flag.
    out = capsys.readouterr().out
    assert "note: bf16 training asked for" in out and "no native bf16" in out and "--cpu-bf16" not in out


def test_bf16_learns_like_fp32_on_real_data(caches, tmp_path: Path, monkeypatch) -> None:
    # Forced on: this VM may lack native bf16 (then it is slow here, but the numerics are the same).
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    fp32 = _run(caches, tmp_path / "fp32", cpu_bf16=False)
    bf16 = _run(caches, tmp_path / "bf16", cpu_bf16=True)
    for hist in (fp32, bf16):
        # It learns: 24 steps from a fresh model take the loss down by a few percent.
        assert hist[-1]["train_loss"] < 0.98 * hist[0]["train_loss"], [r["train_loss"] for r in hist]
    # Same data order, same steps: the curves stay together (fp32's own run-to-run noise on this
    # machine is zero, so this bounds the bf16 error, not luck).
    for a, b in zip(fp32, bf16):
        assert abs(a["train_loss"] - b["train_loss"]) < 0.05 * a["train_loss"] + 0.01
    assert abs(fp32[-1]["val_loss"] - bf16[-1]["val_loss"]) < 0.1 * fp32[-1]["val_loss"]
