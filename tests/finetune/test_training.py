"""The fine-tune's additions around the trainer: frozen BatchNorm, the budget bar, the epochs a
resumed run gets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from portraitseg.finetune.training import BudgetBar, epochs_for, freeze_batchnorm
from portraitseg.models import create_model


def test_frozen_batchnorm_stays_in_eval_mode_through_train() -> None:
    torch.manual_seed(0)
    model = create_model("mobile-unet-035-bilinear", input_size=64)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert freeze_batchnorm(model) == len(bns) > 0
    before = [bn.running_mean.clone() for bn in bns]
    model.train()  # what the trainer calls at the start of every epoch
    assert model.training and not any(bn.training for bn in bns)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))  # statistics unchanged
    assert all(p.grad is not None for p in bns[0].parameters())  # weight and bias still learn
    assert sorted(model.state_dict()) == sorted(create_model("mobile-unet-035-bilinear").state_dict())


def test_bar_off_a_terminal_prints_one_line_per_epoch(capsys: pytest.CaptureFixture) -> None:
    bar = BudgetBar(120, enabled=False)
    bar.epoch_done(1, None, 0.9123, 0.9001)
    bar.epoch_done(3, 5, 0.9234, 0.9001)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("fine-tune: epoch 1 | val mIoU 0.912 (start 0.900), 1:5")
    assert lines[1].startswith("fine-tune: epoch 3/5 | val mIoU 0.923 (start 0.900), ")
    assert lines[1].endswith(" left")


def test_a_resumed_run_gets_the_epochs_its_budget_holds() -> None:
    history = [{"epoch": i + 1, "epoch_s": 10.0} for i in range(4)]
    assert epochs_for(history, 60) == 4 + 6
    assert epochs_for(history, 1) == 4 + 1  # at least one more
