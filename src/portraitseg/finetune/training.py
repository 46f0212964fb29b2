"""Running the trainer for a fine-tune: ``portraitseg.train.Trainer`` as it is, with a bar that
shows the time left and the held-out mIoU, a hard stop at the time budget, and (recipe
``freeze_bn``) BatchNorm statistics kept at the bundled model's.

No second training loop: the epochs, the schedule, EMA, checkpoints (``best.pt`` by held-out
loss, ``last.pt`` for ``--resume``) and metrics.csv are the trainer's. Ctrl-C ends training
between two saves; what ``best.pt`` holds by then is the result.
"""

from __future__ import annotations

import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from tqdm import tqdm

from ..train import TrainConfig, Trainer


def freeze_batchnorm(model: nn.Module) -> int:
    """Keep every BatchNorm of ``model`` in eval mode (running statistics used and left as they
    are) through later ``model.train()`` calls; returns how many.

    Why: the bundled model's BatchNorm statistics come from a broad mix of photos. A batch of a
    few similar ones (a user's selfies) has other statistics, and in training mode the bundled
    model scored 0.77 pixel accuracy on picsart_selfie where eval mode scores 0.96: fine-tuning
    then adapts the weights to batch statistics that inference never uses, and the held-out
    mIoU fell from 0.90 to 0.73 in 4 epochs (frozen: it rose). The trainer's
    ``freeze_encoder_bn_epochs`` covers the encoder only.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            # Per instance: Module.train() recurses into children through their own train().
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
            count += 1
    return count


def _stay_in_eval(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


class BudgetBar:
    """One bar over the time budget: ``1:23 left | epoch 3/9 | val mIoU 0.921 (start 0.905)``,
    ticking every second (an epoch can take minutes on a busy CPU). Off the terminal it prints
    one line per epoch instead."""

    def __init__(self, budget_s: float, enabled: bool | None = None) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()
        self.text = "starting"
        # enabled=None: a bar on a terminal only (tqdm's disable=None), lines elsewhere.
        disable = None if enabled is None else not enabled
        # The changing text goes in {desc} (tqdm puts ", " before a postfix).
        self.bar = tqdm(total=round(budget_s), desc=self.text, unit="s", disable=disable,
                        bar_format="fine-tune {percentage:3.0f}%|{bar}| {desc}", leave=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        if not self.bar.disable:
            self._thread.start()

    def left_s(self) -> float:
        return max(0.0, self.budget_s - (time.monotonic() - self.start))

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.refresh()

    def refresh(self) -> None:
        elapsed = min(self.budget_s, time.monotonic() - self.start)
        self.bar.n = round(elapsed)
        left = self.left_s()
        self.bar.set_description_str(f"{int(left // 60)}:{int(left % 60):02d} left | {self.text}")

    def epoch_done(self, epoch: int, total: int | None, miou: float | None, start_miou: float | None) -> None:
        """``total``: the planned epochs, None while not yet fitted to the budget."""
        score = "" if miou is None else f" | val mIoU {miou:.3f}"
        if miou is not None and start_miou is not None:
            score += f" (start {start_miou:.3f})"
        self.text = f"epoch {epoch}{'' if total is None else f'/{total}'}{score}"
        if self.bar.disable:
            left = self.left_s()
            print(f"fine-tune: {self.text}, {int(left // 60)}:{int(left % 60):02d} left", flush=True)
        else:
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.bar.close()


class FinetuneTrainer(Trainer):
    """The trainer, reporting each epoch to a :class:`BudgetBar` and stopping at its deadline."""

    def __init__(self, cfg: TrainConfig, freeze_bn: bool) -> None:
        super().__init__(cfg)
        self.frozen_bn = freeze_batchnorm(self.model) if freeze_bn else 0
        self.bar: BudgetBar | None = None
        self.start_miou: float | None = None

    def validate(self) -> dict[str, float]:
        row = super().validate()
        if self.bar is not None:
            epoch = len(self.history) + 1  # fit() appends this epoch's row after validating
            if self.bar.left_s() <= 0:
                # Out of time: make this the last epoch (fit() re-reads total_epochs every epoch).
                self.total_epochs = min(self.total_epochs, epoch)
            # The recipe's epoch count is a placeholder until the trainer fits it to the budget
            # after epoch 2: no "1/100" on the bar.
            planned = self.total_epochs if self.total_epochs != self.cfg.epochs or epoch > 2 else None
            self.bar.epoch_done(epoch, planned, row.get("val_miou"), self.start_miou)
        return row


@dataclass
class TrainOutcome:
    best: Path | None  # best.pt, None when no epoch finished
    epochs: int  # epochs trained in all (earlier runs included)
    interrupted: bool
    bf16: bool
    start_miou: float | None  # held-out mIoU (cache, training size) of the starting weights
    history: list[dict[str, float]]


def epochs_for(history: list[dict[str, float]], budget_s: float) -> int:
    """Total epochs for a resumed run to fill ``budget_s`` more, from its own epoch times."""
    done = len(history)
    times = [float(r["epoch_s"]) for r in history[-3:] if "epoch_s" in r]
    per_epoch = sum(times) / len(times) if times else budget_s
    return done + max(1, int(budget_s / max(per_epoch, 1e-3)))


def run_training(cfg: TrainConfig, freeze_bn: bool, resume: Path | None, start_miou: float | None = None,
                 bar: bool | None = None) -> TrainOutcome:
    """Train ``cfg`` (for ``cfg.time_budget_s``), or continue ``resume`` for that long; Ctrl-C
    stops it and keeps the best epoch so far. ``start_miou``: the starting weights' held-out
    mIoU, measured here on a fresh run (an epoch-0 validation), passed back in on a resume."""
    trainer = FinetuneTrainer(cfg, freeze_bn)
    budget = float(cfg.time_budget_s or 0)
    if resume is not None:
        trainer.resume(resume, epochs_for(_history_of(resume), budget))
        trainer.start_miou = start_miou
    else:
        trainer.start_miou = trainer.validate().get("val_miou")
    trainer.bar = BudgetBar(budget, bar)
    interrupted = False
    try:
        trainer.fit()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        trainer.bar.close()
    best = trainer.run_dir / "best.pt"
    return TrainOutcome(best if best.is_file() else None, len(trainer.history), interrupted, trainer.bf16,
                        trainer.start_miou, list(trainer.history))


def _history_of(last: Path) -> list[dict[str, float]]:
    from ..checkpoint import load_training_state

    return load_training_state(last)["history"]
