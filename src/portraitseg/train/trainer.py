"""Training loop: cached data on the training device, GPU augmentation, AdamW + warm-up/cosine,
bf16 autocast + channels_last on CUDA, weight EMA, resumable checkpoints, CSV + PNG graphs,
DDP through ``torchrun``.

The parts live beside it: options in :mod:`.config`, EMA in :mod:`.ema`, the learning rate in
:mod:`.schedule`, data and sampling in :mod:`.data`, validation in :mod:`.validate`, CSV and
graphs in :mod:`.outputs`, devices/DDP in :mod:`.distributed`; file I/O in ``checkpoint``.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint import (
    atomic_save,
    config_from_dict,
    load_model,
    load_training_state,
    load_weights,
    save_weights,
)
from ..data.augment import AugmentConfig, BatchAugmenter
from ..losses import segmentation_loss
from ..models import MobileUNet, model_config, to_head_kernel, to_subpixel_head
from . import distributed as ddp
from .config import TrainConfig
from .data import epoch_indices, load_images, load_labelled, source_probs, to_device
from .ema import ModelEMA
from .outputs import plot_history, print_row, read_metric_epochs, write_metrics
from .precision import autocast_context, keep_batchnorm_fp32, use_bf16
from .schedule import LRSchedule
from .validate import validate


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with no weight decay on BatchNorm weights and biases (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def build_model(cfg: TrainConfig) -> MobileUNet:
    """The run's model, warm-started from ``cfg.init_weights`` when given."""
    mcfg = model_config(cfg.model, input_size=cfg.input_size, **cfg.model_overrides)
    try:
        model = MobileUNet(mcfg)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # a value the layers cannot use
        raise ValueError(f"--model {cfg.model} with model_overrides {cfg.model_overrides}: {exc}") from None
    if cfg.init_weights:
        init = load_model(cfg.init_weights)
        if init.config.head == "upsample" and mcfg.head == "subpixel":
            init = to_subpixel_head(init)  # fine-tune an older checkpoint in today's layout
        if init.config.head_kernel != mcfg.head_kernel:
            init = to_head_kernel(init, mcfg.head_kernel)
        _warm_start(model, init)
    if cfg.init_encoder:
        from ..models.donors import load_donor_encoder

        load_donor_encoder(model.encoder, cfg.init_encoder)
    return model


def _warm_start(model: MobileUNet, init: MobileUNet) -> None:
    """Copy ``init``'s weights into ``model``: all of them when the architectures match, else every
    tensor whose name and shape match (a leaner decoder variant starts from the bundled weights;
    the layers it lacks are dropped, the ones it adds start fresh), saying what was left out."""
    if init.config.to_dict() == {**model.config.to_dict(), "input_size": init.config.input_size}:
        model.load_state_dict(init.state_dict())
        return
    own = model.state_dict()
    take = {k: v for k, v in init.state_dict().items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(take, strict=False)
    fresh = sorted({k.rsplit(".", 1)[0] for k in own if k not in take})
    dropped = sorted({k.rsplit(".", 1)[0] for k in init.state_dict() if k not in take})
    print(f"warm start from another variant: {len(take)}/{len(own)} tensors copied; "
          f"fresh: {', '.join(fresh) or 'none'}; dropped: {', '.join(dropped) or 'none'}", flush=True)


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        cfg.validate()  # again: fields may have been changed since the config was made
        self.cfg = cfg
        self.device = ddp.pick_device(cfg.device)
        self.dist = ddp.init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        _seed_everything(cfg.seed + self.dist.rank)
        self._init_data()
        self.model = build_model(cfg).to(self.device)
        self.bf16 = use_bf16(self.device, cfg.amp, cfg.cpu_bf16)
        if self.bf16 and self.device.type == "cpu":
            keep_batchnorm_fp32(self.model)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.steps_per_epoch = max(1, len(self.train_data) // (cfg.batch_size * self.dist.world))
        self.total_epochs = cfg.epochs
        warmup_steps = int(cfg.warmup_epochs * self.steps_per_epoch)
        self.schedule = LRSchedule(self.optimizer, cfg.schedule, cfg.lr, warmup_steps, cfg.min_lr_ratio)
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            if self.device.type == "cpu":
                # Measured with torch 2.13 on this model: the compiled CPU backward gave encoder
                # gradients 10x too small (cosine 0.2 to eager's) and a fine-tune that diverged.
                raise ValueError("--compile is CUDA-only: on CPU torch.compile computed wrong gradients")
            self.net = torch.compile(self.net)
        self.start_epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.history: list[dict[str, float]] = []
        self.run_dir = Path(cfg.out_dir) / cfg.run

    def _init_data(self) -> None:
        cfg = self.cfg
        bars = cfg.progress and self.dist.main
        self.train_data = load_labelled(cfg.train_cache, cfg.workers, cfg.limit, bars)
        self.val_data = load_labelled(cfg.val_cache, cfg.workers, None, bars) if cfg.val_cache else None
        bg = load_images(cfg.backgrounds, cfg.workers, bars)
        self.backgrounds = torch.from_numpy(bg.images).to(self.device) if bg is not None else None
        bg_probs = None
        if bg is not None and cfg.background_weights:
            bg_probs = torch.from_numpy(source_probs(bg, cfg.background_weights, shares=True)).to(self.device)
        self.sample_probs = None
        if cfg.source_weights:
            probs = source_probs(self.train_data, cfg.source_weights, shares=False)
            self.sample_probs = torch.from_numpy(probs).to(self.device)
        self.train_t = to_device(self.train_data, self.device)
        self.val_t = to_device(self.val_data, self.device) if self.val_data is not None else None
        self.augmenter = BatchAugmenter(
            AugmentConfig(out_size=cfg.input_size, **cfg.augment), self.backgrounds, bg_probs
        )

    def _generator(self, epoch: int, salt: int, rank: int | None = None) -> torch.Generator:
        # One generator per (epoch, rank): a resumed run replays exactly what it would have done.
        rank = self.dist.rank if rank is None else rank
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.cfg.seed * 1_000_003 + epoch * 7919 + rank * 104729 + salt)
        return gen

    def _epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """This rank's sample indices for the epoch, and the generator augmentation continues on.

        Every rank draws the same order (rank 0's stream) and takes a disjoint slice of it;
        augmentation then continues on a per-rank stream.
        """
        gen = self._generator(epoch, 0, rank=0)
        per_rank = self.steps_per_epoch * self.cfg.batch_size
        draws = per_rank * self.dist.world
        order = epoch_indices(len(self.train_data), draws, self.sample_probs, gen, self.device)
        if self.dist.rank > 0:
            gen = self._generator(epoch, 0)
        return order[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank], gen

    # ------------------------------------------------------------------ loop
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.net.train()
        if epoch < cfg.freeze_encoder_bn_epochs:  # epoch is 0-based here
            for m in self.model.encoder.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.eval()  # running statistics stay; weight and bias still train
        order, gen = self._epoch_order(epoch)
        images, targets, ignore = self.train_t
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        counted = torch.zeros((), device=self.device)
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{self.total_epochs}",
            disable=not (cfg.progress and self.dist.main),
            leave=False,
        )
        lr = 0.0
        for i in bar:
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            with torch.no_grad():
                x, y, ign = self.augmenter(images[idx], targets[idx], ignore[idx], gen)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = self.schedule.set(self.step, self.total_epochs * self.steps_per_epoch)
            with autocast_context(self.device, self.bf16):
                logits = self.net(x)
            loss = segmentation_loss(logits, y, ign, cfg.dice_weight, cfg.boundary_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            with torch.no_grad():
                valid = 1 - ign
                hit = ((logits.float() > 0) == (y > 0.5)).float() * valid
                correct += hit.sum()
                counted += valid.sum()
                loss_sum += loss.detach()
            # Every 20 steps (loss.item() waits for the GPU) and at the last, so the bar ends
            # showing the epoch's final lr, the one metrics.csv records.
            if cfg.progress and self.dist.main and (i % 20 == 0 or i == self.steps_per_epoch - 1):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        stats = torch.stack([loss_sum / self.steps_per_epoch, correct / counted.clamp_min(1)])
        stats = ddp.mean_over_ranks(stats, self.dist.world)
        return {"train_loss": float(stats[0]), "train_acc": float(stats[1]), "lr": lr}

    def validate(self) -> dict[str, float]:
        if self.val_t is None:
            return {}
        cfg = self.cfg
        model = self.ema.module if self.ema is not None else self.model
        return validate(
            model, self.val_t, cfg.batch_size, cfg.input_size, (cfg.dice_weight, cfg.boundary_weight),
            # CPU runs select in fp32: the shipped model runs in fp32, and validation is a small share.
            self.bf16 and self.device.type == "cuda", cfg.channels_last,
        )  # fmt: skip

    def fit(self) -> Path:
        cfg = self.cfg
        started = time.time()
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._sync_metrics()
            print(
                f"training {cfg.model} at {cfg.input_size}px on {len(self.train_data)} samples "
                f"({self.steps_per_epoch} steps/epoch x {self.total_epochs} epochs{self._budget_note()}) "
                f"on {self.device}"
                + (f" x{self.dist.world}" if self.dist.world > 1 else "")
                + (" in bf16 autocast" if self.bf16 else " in fp32")
            )
        epoch = self.start_epoch
        while epoch < self.total_epochs:
            t0 = time.time()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            row.update(self.validate())
            row["epoch_s"] = time.time() - t0
            row["elapsed_s"] = time.time() - started
            self.schedule.epoch_end(row.get("val_loss"))
            if epoch == 1 and cfg.time_budget_s and self.start_epoch <= 1:
                # Epoch 2, not 1: the first epoch pays for cuDNN autotuning and warm-up.
                self._fit_epochs_to_budget(row["epoch_s"], cfg.time_budget_s - row["elapsed_s"])
            self.history.append(row)
            if self.dist.main:
                print_row(row)
                self._save(epoch, row)
            epoch += 1
        if self.dist.main:
            plot_history(self.run_dir, self.history)
        return self.run_dir / "best.pt"

    def _budget_note(self) -> str:
        """What the time budget will do, for the start line."""
        budget = self.cfg.time_budget_s
        if not budget:
            return ""
        if self.start_epoch > 1:
            return ", fitted to the time budget earlier in this run"
        if self.total_epochs < 2:  # the re-fit comes after epoch 2: a 1-epoch run never gets there
            return ""
        return f", re-fitted after epoch 2 to a {budget:.0f}s time budget"

    def _sync_metrics(self) -> None:
        """metrics.csv = the history of the checkpoint this run starts from (see outputs.py)."""
        if not self.history:
            return
        extra = len(read_metric_epochs(self.run_dir)) - len(self.history)
        write_metrics(self.run_dir, self.history)
        if extra > 0:
            print(f"note: metrics.csv had {extra} row(s) past last.pt (an epoch interrupted before its "
                  "checkpoint); rewritten from last.pt's history")

    def _fit_epochs_to_budget(self, epoch_s: float, remaining_s: float) -> None:
        fitted = 2 + max(0, int(remaining_s / max(epoch_s, 1e-3)))
        # Ranks time their epochs differently; all must run the same number or DDP hangs.
        fitted = ddp.broadcast_int(fitted, self.device, self.dist.world)
        if fitted != self.total_epochs and self.dist.main:
            print(f"time budget {self.cfg.time_budget_s:.0f}s at {epoch_s:.2f}s/epoch: {fitted} epochs")
        self.total_epochs = fitted

    # ------------------------------------------------------------------ checkpoints
    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.schedule.state_dict(),
            "epoch": epoch,
            "step": self.step,
            "total_epochs": self.total_epochs,
            "best_val": self.best_val,
            "history": self.history,
            "train_config": asdict(self.cfg),
            "rng": _rng_state(),
        }

    def eval_model(self) -> MobileUNet:
        """The weights that get evaluated and shipped: the EMA when enabled."""
        if self.ema is None:
            return self.model
        # Building a model initialises weights from the global RNG, which dropout draws from and
        # last.pt restores on resume: drawing here would make a resumed run differ from a
        # straight one (it did: epoch-4 train loss 0.837967 vs 0.838634).
        with torch.random.fork_rng(devices=[]):
            model = MobileUNet(self.model.config)
        model.load_state_dict(self.ema.module.state_dict())
        return model

    def _save(self, epoch: int, row: dict[str, float]) -> None:
        """best.pt (and the epoch's weight file) when the score improved, then last.pt, then
        metrics.csv from last.pt's history. In this order a run killed at any point resumes
        from a last.pt whose best_val is what best.pt holds, and its metrics.csv is rewritten
        from that last.pt (outputs.py)."""
        score = _score(row)
        improved = score < self.best_val
        if improved:
            self.best_val = score
        state = self.state(epoch)  # after best_val is updated: last.pt once kept the value before
        if improved:
            shipped = self.eval_model()
            # best.pt holds the evaluated (EMA) weights so `eval best.pt` measures what we ship.
            atomic_save(dict(state, model=shipped.state_dict()), self.run_dir / "best.pt")
            name = f"{self.cfg.model}-{epoch + 1:03d}-{score:.2f}.pt"
            save_weights(shipped, self.run_dir / name, extra={"epoch": epoch + 1, "val": row})
            kept = sorted(self.run_dir.glob(f"{self.cfg.model}-*.pt"), key=lambda p: p.stat().st_mtime)
            for old in kept[: -self.cfg.keep_epoch_checkpoints]:
                old.unlink()
        atomic_save(state, self.run_dir / "last.pt")
        write_metrics(self.run_dir, self.history)

    def resume(self, path: str | Path, epochs: int | None = None) -> None:
        """Continue from a last.pt; ``epochs`` (given explicitly) replaces its planned total:
        the cosine schedule is computed from the total at every step, so it re-plans the rest."""
        data = load_training_state(path, self.device)
        if config_from_dict(data["model_config"]) != self.model.config:
            raise ValueError(f"{path}: checkpoint model config differs from this run's")
        load_weights(self.model, data["model"], path)
        try:
            if self.ema is not None and data.get("ema") is not None:
                self.ema.load_state_dict(data["ema"])
            self.optimizer.load_state_dict(data["optimizer"])
            self.schedule.load_state_dict(data.get("plateau"))
            self.start_epoch = int(data["epoch"]) + 1
            self.step = int(data["step"])
            self.total_epochs = int(data["total_epochs"])
            self.history = list(data["history"])
            # last.pt files written before the save order was fixed hold the best value from
            # before their own epoch; the history has every epoch's score: take the best of both.
            self.best_val = min([float(data["best_val"]), *(_score(r) for r in self.history)])
            _set_rng_state(data["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path}: training state does not fit this run ({reason})") from None
        if epochs is not None and epochs != self.total_epochs:
            if epochs <= self.start_epoch:
                raise ValueError(f"{path}: already trained {self.start_epoch} epoch(s); epochs={epochs} "
                                 "leaves nothing to do (give more)")
            if self.dist.main:
                print(f"resume: re-planned from {self.total_epochs} to {epochs} epochs "
                      f"(learning-rate schedule recomputed for the remaining {epochs - self.start_epoch})")
            self.total_epochs = epochs


def _score(row: dict[str, float]) -> float:
    """What best.pt is chosen by: validation loss, else (no validation caches) training loss."""
    return float(row.get("val_loss", row["train_loss"]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"].cpu())
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def train(cfg: TrainConfig, resume: str | Path | None = None, epochs: int | None = None) -> Path:
    """Train (or continue from ``resume``); ``epochs`` re-plans a resumed run to that many."""
    trainer = Trainer(cfg)
    if resume:
        trainer.resume(resume, epochs)
    try:
        best = trainer.fit()
        # Rank 0 still saves and plots after the last epoch; a rank that tore its gloo connections
        # down meanwhile could make rank 0's transport thread abort. Leave together (success only:
        # after a failure the other rank may never arrive).
        ddp.barrier(trainer.dist.world)
        return best
    finally:
        ddp.shutdown()
