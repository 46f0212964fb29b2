"""LR schedule and weight EMA: the exact numbers the training loop has always used."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from portraitseg.train import LRSchedule, ModelEMA, lr_factor


def _optimizer(lr: float = 0.004) -> torch.optim.Optimizer:
    params = [nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))]
    return torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:]}], lr=lr)


def test_cosine_warms_up_linearly_then_decays_to_the_floor() -> None:
    peak, warm, total, floor = 0.004, 10, 110, 0.01
    sched = LRSchedule(_optimizer(peak), "cosine", peak, warm, floor)
    lrs = [sched.set(step, total) for step in range(total + 5)]
    assert lrs[:warm] == pytest.approx([peak * (i + 1) / warm for i in range(warm)])
    assert lrs[warm] == pytest.approx(peak)  # cosine starts at the peak
    assert lrs[warm + 50] == pytest.approx(peak * (floor + (1 - floor) * 0.5))  # halfway
    assert lrs[total] == pytest.approx(peak * floor) and lrs[-1] == pytest.approx(peak * floor)
    assert all(a >= b for a, b in zip(lrs[warm:], lrs[warm + 1 :]))
    assert all(g["lr"] == lrs[-1] for g in sched.optimizer.param_groups)


def test_cosine_matches_lr_factor_and_follows_a_refitted_total() -> None:
    sched = LRSchedule(_optimizer(), "cosine", 0.01, 3, 0.05)
    for step, total in [(0, 40), (2, 40), (3, 40), (17, 40), (17, 25), (30, 25)]:
        assert sched.set(step, total) == 0.01 * lr_factor(step, total, 3, 0.05)
    progress = (17 - 3) / (25 - 3)
    assert lr_factor(17, 25, 3, 0.05) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lr_factor(0, 10, 0, 0.0) == pytest.approx(1.0)  # no warm-up: starts at the peak


def test_plateau_warms_up_then_halves_after_three_bad_epochs() -> None:
    opt = _optimizer(0.002)
    sched = LRSchedule(opt, "plateau", 0.002, 4, 0.01)
    assert [sched.set(s, 100) for s in range(4)] == pytest.approx([0.0005, 0.001, 0.0015, 0.002])
    assert sched.set(50, 100) == pytest.approx(0.002)  # after warm-up only the plateau moves it
    for loss in [1.0, 1.0, 1.0, 1.0]:
        sched.epoch_end(loss)
    assert sched.set(51, 100) == pytest.approx(0.002)
    sched.epoch_end(1.0)  # 4th epoch without improvement (patience 3)
    assert sched.set(52, 100) == pytest.approx(0.001)
    sched.epoch_end(None)  # no validation set: nothing happens
    state = sched.state_dict()
    again = LRSchedule(_optimizer(0.002), "plateau", 0.002, 4, 0.01)
    again.load_state_dict(state)
    assert again.plateau.num_bad_epochs == sched.plateau.num_bad_epochs
    assert LRSchedule(_optimizer(), "cosine", 0.1, 0, 0.0).state_dict() is None


def test_unknown_schedule_is_an_error() -> None:
    with pytest.raises(ValueError, match="schedule must be one of"):
        LRSchedule(_optimizer(), "step", 0.1, 0, 0.0)


def test_ema_ramps_its_decay_and_tracks_the_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    ema = ModelEMA(model, decay=0.9)
    assert ema.current_decay() == pytest.approx(2 / 11)
    expected = {k: v.clone() for k, v in ema.module.state_dict().items()}
    for n in range(1, 40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.train()(torch.randn(4, 2, 5, 5))  # moves the BN running stats too
        d = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(d)
        ema.update()
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = d * expected[k] + (1 - d) * v
            else:
                expected[k] = expected[k]  # counters (num_batches_tracked) are not averaged
    assert ema.updates == 39
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters())
    restored = ModelEMA(model, decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 39
