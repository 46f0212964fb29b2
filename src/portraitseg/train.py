"""Training loop: cached data on the training device, GPU augmentation, AdamW + warm-up/cosine,
bf16 autocast + channels_last on CUDA, weight EMA, resumable checkpoints, CSV + PNG graphs,
DDP through ``torchrun``.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .checkpoint import config_from_dict, load_model, save_weights
from .data.augment import AugmentConfig, BatchAugmenter, resize_batch
from .data.cache import CacheArrays, concat_caches, load_cache
from .losses import segmentation_loss
from .models import DEFAULT_MODEL, MobileUNet, model_config, to_subpixel_head
from .models.donors import load_donor_encoder


@dataclass
class TrainConfig:
    train_cache: list[str] = field(default_factory=list)
    val_cache: list[str] = field(default_factory=list)
    backgrounds: str | list[str] | None = None  # image cache(s) of person-free backgrounds for compositing
    # Draw weight per training source (dataset folder name, e.g. eg1800: 3.0): a sample of a source
    # with weight w is drawn w times as often as under uniform sampling. Unlisted sources weigh 1.
    # Empty = every sample exactly once per epoch (a permutation).
    source_weights: dict[str, float] = field(default_factory=dict)
    # Share of background draws per background source (folder name, e.g. scenes: 0.5, textures: 0.5);
    # empty = every background image equally likely.
    background_weights: dict[str, float] = field(default_factory=dict)
    init_weights: str | None = None  # warm start from a weights file (fine-tuning)
    # Pretrained encoder from a donor file (models/donors.py): the seed .tflite (Keras channels)
    # or the DeepLab .onnx (TF-slim channels: set model_overrides.divisor=4). Decoder starts fresh.
    init_encoder: str | None = None
    model: str = DEFAULT_MODEL
    model_overrides: dict[str, Any] = field(default_factory=dict)
    input_size: int = 224
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # or "plateau" (the original project's ReduceLROnPlateau)
    min_lr_ratio: float = 0.01
    dice_weight: float = 0.5
    boundary_weight: float = 2.0
    ema_decay: float = 0.999  # 0 disables; EMA weights are what gets evaluated and saved as best
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True
    compile: bool = False
    time_budget_s: float | None = None  # re-fit `epochs` after epoch 1 so training ends in time
    limit: int | None = None  # use only the first N training samples (smoke tests)
    seed: int = 0
    device: str = "auto"
    run: str = "run"
    out_dir: str = "checkpoints"
    keep_epoch_checkpoints: int = 3
    workers: int = 4
    progress: bool = True
    augment: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return cls(**data)


# ----------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(spec: str) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(spec)


class ModelEMA:
    """Exponential moving average of weights and BN buffers.

    The decay ramps up as ``(1 + n) / (10 + n)`` so short runs are not dominated by the
    random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        # state_dict() tensors alias the live parameters/buffers: collect them once, not per step.
        self._ema = [t for t in self.module.state_dict().values() if t.dtype.is_floating_point]
        self._cur = [t for t in model.state_dict().values() if t.dtype.is_floating_point]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self._ema, self._cur, 1.0 - d)

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


# ----------------------------------------------------------------------------- schedule
def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio`` of the peak at ``total`` steps."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        self.dist = init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
        self._seed_everything(cfg.seed + self.dist.rank)
        self.train_data = self._load(cfg.train_cache, cfg.limit)
        self.val_data = self._load(cfg.val_cache, None) if cfg.val_cache else None
        bg = self._load_backgrounds(cfg.backgrounds)
        self.backgrounds = torch.from_numpy(bg.images).to(self.device) if bg is not None else None
        bg_probs = None
        if bg is not None and cfg.background_weights:
            bg_probs = torch.from_numpy(source_probs(bg, cfg.background_weights, shares=True)).to(self.device)
        self.sample_probs = None
        if cfg.source_weights:
            probs = source_probs(self.train_data, cfg.source_weights, shares=False)
            self.sample_probs = torch.from_numpy(probs).to(self.device)
        self.train_t = self._to_device(self.train_data)
        self.val_t = self._to_device(self.val_data) if self.val_data is not None else None
        self.augmenter = BatchAugmenter(
            AugmentConfig(out_size=cfg.input_size, **cfg.augment), self.backgrounds, bg_probs
        )

        mcfg = model_config(cfg.model, input_size=cfg.input_size, **cfg.model_overrides)
        self.model = MobileUNet(mcfg)
        if cfg.init_weights:
            init = load_model(cfg.init_weights)
            if init.config.head == "upsample" and mcfg.head == "subpixel":
                init = to_subpixel_head(init)  # fine-tune an older checkpoint in today's layout
            self.model.load_state_dict(init.state_dict())
        if cfg.init_encoder:
            load_donor_encoder(self.model.encoder, cfg.init_encoder)
        self.model = self.model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        decay, no_decay = [], []
        for p in self.model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN/bias
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        self.steps_per_epoch = max(1, len(self.train_data) // (cfg.batch_size * self.dist.world))
        self.total_epochs = cfg.epochs
        self.plateau = (
            torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=0.5, patience=3)
            if cfg.schedule == "plateau"
            else None
        )
        self.net: nn.Module = self.model
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.start_epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.history: list[dict[str, float]] = []
        self.run_dir = Path(cfg.out_dir) / cfg.run

    # ------------------------------------------------------------------ data helpers
    def _load(self, paths: list[str], limit: int | None) -> CacheArrays:
        if not paths:
            raise ValueError("no training cache given (build one with `portraitseg cache`)")
        data = concat_caches([load_cache(p, self.cfg.workers) for p in paths])
        if limit:
            data = CacheArrays(
                data.images[:limit],
                data.targets[:limit],
                data.ignore[:limit],
                data.source[:limit],
                data.source_names,
                data.names[:limit],
            )
        if data.targets is None:
            raise ValueError(f"{paths[0]}: cache has no targets (an image-only cache?)")
        return data

    def _load_backgrounds(self, paths: str | list[str] | None) -> CacheArrays | None:
        if not paths:
            return None
        paths = [paths] if isinstance(paths, str) else list(paths)
        return concat_caches([load_cache(p, self.cfg.workers) for p in paths])

    def _to_device(self, data: CacheArrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(torch.from_numpy(a).to(self.device) for a in (data.images, data.targets, data.ignore))

    def _seed_everything(self, seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _generator(self, epoch: int, salt: int, rank: int | None = None) -> torch.Generator:
        # One generator per (epoch, rank): a resumed run replays exactly what it would have done.
        rank = self.dist.rank if rank is None else rank
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self.cfg.seed * 1_000_003 + epoch * 7919 + rank * 104729 + salt)
        return gen

    # ------------------------------------------------------------------ schedule
    def _set_lr(self) -> float:
        if self.plateau is not None:
            warm = int(self.cfg.warmup_epochs * self.steps_per_epoch)
            if self.step < warm:
                for g in self.optimizer.param_groups:
                    g["lr"] = self.cfg.lr * (self.step + 1) / warm
            return self.optimizer.param_groups[0]["lr"]
        f = lr_factor(
            self.step,
            self.total_epochs * self.steps_per_epoch,
            int(self.cfg.warmup_epochs * self.steps_per_epoch),
            self.cfg.min_lr_ratio,
        )
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr * f
        return self.cfg.lr * f

    # ------------------------------------------------------------------ loop
    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.net.train()
        # Every rank draws the same permutation (rank 0's stream) and takes a disjoint slice of
        # it; augmentation then continues on a per-rank stream.
        gen = self._generator(epoch, 0, rank=0)
        n = len(self.train_data)
        if self.sample_probs is None:
            perm = torch.randperm(n, generator=gen, device=self.device)
        else:
            draws = self.steps_per_epoch * cfg.batch_size * self.dist.world
            perm = torch.multinomial(self.sample_probs, draws, replacement=True, generator=gen)
        if self.dist.rank > 0:
            gen = self._generator(epoch, 0)
        per_rank = self.steps_per_epoch * cfg.batch_size
        perm = perm[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]
        images, targets, ignore = self.train_t
        amp = cfg.amp and self.device.type == "cuda"
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
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            with torch.no_grad():
                x, y, ign = self.augmenter(images[idx], targets[idx], ignore[idx], gen)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = self._set_lr()
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = self.net(x)
            loss = segmentation_loss(logits, y, ign, cfg.dice_weight, cfg.boundary_weight)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
            self.step += 1
            with torch.no_grad():
                valid = 1 - ign
                hit = ((logits.float() > 0) == (y > 0.5)).float() * valid
                correct += hit.sum()
                counted += valid.sum()
                loss_sum += loss.detach()
            if cfg.progress and self.dist.main and i % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
        stats = torch.stack([loss_sum / self.steps_per_epoch, correct / counted.clamp_min(1)])
        if self.dist.world > 1:
            dist.all_reduce(stats)
            stats /= self.dist.world
        return {"train_loss": float(stats[0]), "train_acc": float(stats[1]), "lr": lr}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.val_t is None:
            return {}
        model = self.ema.module if self.ema is not None else self.model
        model.eval()
        images, targets, ignore = self.val_t
        cfg = self.cfg
        amp = cfg.amp and self.device.type == "cuda"
        tot = {"loss": 0.0, "n": 0}
        tp = fp = fn = tn = 0.0
        for s in range(0, len(images), cfg.batch_size):
            x, y, ign = resize_batch(
                images[s : s + cfg.batch_size],
                targets[s : s + cfg.batch_size],
                ignore[s : s + cfg.batch_size],
                cfg.input_size,
            )
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x.contiguous(memory_format=torch.channels_last) if cfg.channels_last else x)
            loss = segmentation_loss(logits, y, ign, cfg.dice_weight, cfg.boundary_weight)
            tot["loss"] += float(loss) * len(x)
            tot["n"] += len(x)
            valid = ign < 0.5
            pred, truth = logits.float() > 0, y > 0.5
            tp += float((pred & truth & valid).sum())
            fp += float((pred & ~truth & valid).sum())
            fn += float((~pred & truth & valid).sum())
            tn += float((~pred & ~truth & valid).sum())
        person_iou = tp / max(1.0, tp + fp + fn)
        bg_iou = tn / max(1.0, tn + fp + fn)
        return {
            "val_loss": tot["loss"] / max(1, tot["n"]),
            "val_acc": (tp + tn) / max(1.0, tp + fp + fn + tn),
            "val_miou": (person_iou + bg_iou) / 2,
        }

    def fit(self) -> Path:
        cfg = self.cfg
        started = time.time()
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            print(
                f"training {cfg.model} at {cfg.input_size}px on {len(self.train_data)} samples "
                f"({self.steps_per_epoch} steps/epoch x {self.total_epochs} epochs) on {self.device}"
                + (f" x{self.dist.world}" if self.dist.world > 1 else "")
            )
        epoch = self.start_epoch
        while epoch < self.total_epochs:
            t0 = time.time()
            row = {"epoch": epoch + 1, **self.train_epoch(epoch)}
            row.update(self.validate())
            row["epoch_s"] = time.time() - t0
            row["elapsed_s"] = time.time() - started
            if self.plateau is not None and "val_loss" in row:
                self.plateau.step(row["val_loss"])
            if epoch == 1 and cfg.time_budget_s and self.start_epoch <= 1:
                # Epoch 2, not 1: the first epoch pays for cuDNN autotuning and warm-up.
                self._fit_epochs_to_budget(row["epoch_s"], cfg.time_budget_s - row["elapsed_s"])
            self.history.append(row)
            if self.dist.main:
                self._log(row)
                self._save(epoch, row)
            epoch += 1
        if self.dist.main:
            self._plot()
        return self.run_dir / "best.pt"

    def _fit_epochs_to_budget(self, epoch_s: float, remaining_s: float) -> None:
        fitted = 2 + max(0, int(remaining_s / max(epoch_s, 1e-3)))
        if self.dist.world > 1:
            # Ranks time their epochs differently; all must run the same number or DDP hangs.
            agreed = torch.tensor([fitted], device=self.device)
            dist.broadcast(agreed, src=0)
            fitted = int(agreed.item())
        if fitted != self.total_epochs and self.dist.main:
            print(f"time budget {self.cfg.time_budget_s:.0f}s at {epoch_s:.2f}s/epoch: {fitted} epochs")
        self.total_epochs = fitted

    # ------------------------------------------------------------------ outputs
    def _log(self, row: dict[str, float]) -> None:
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        text = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        tqdm.write(text)

    def state(self, epoch: int) -> dict[str, Any]:
        return {
            "model_config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
            "epoch": epoch,
            "step": self.step,
            "total_epochs": self.total_epochs,
            "best_val": self.best_val,
            "history": self.history,
            "train_config": asdict(self.cfg),
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
        }

    def eval_model(self) -> MobileUNet:
        """The weights that get evaluated and shipped: the EMA when enabled."""
        if self.ema is None:
            return self.model
        model = MobileUNet(self.model.config)
        model.load_state_dict(self.ema.module.state_dict())
        return model

    def _save(self, epoch: int, row: dict[str, float]) -> None:
        state = self.state(epoch)
        _atomic_save(state, self.run_dir / "last.pt")
        score = row.get("val_loss", row["train_loss"])
        if score < self.best_val:
            self.best_val = score
            state["best_val"] = score
            # best.pt holds the evaluated (EMA) weights so `eval best.pt` measures what we ship.
            best = dict(state, model=self.eval_model().state_dict())
            _atomic_save(best, self.run_dir / "best.pt")
            name = f"{self.cfg.model}-{epoch + 1:03d}-{score:.2f}.pt"
            save_weights(self.eval_model(), self.run_dir / name, extra={"epoch": epoch + 1, "val": row})
            kept = sorted(self.run_dir.glob(f"{self.cfg.model}-*.pt"), key=lambda p: p.stat().st_mtime)
            for old in kept[: -self.cfg.keep_epoch_checkpoints]:
                old.unlink()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [r["epoch"] for r in self.history]
        for key, title in [
            ("train_loss", "Training loss"),
            ("train_acc", "Training pixel accuracy"),
            ("val_loss", "Validation loss"),
            ("val_acc", "Validation pixel accuracy"),
            ("lr", "Learning rate"),
        ]:
            values = [r.get(key) for r in self.history]
            if any(v is None for v in values):
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.plot(epochs, values, marker="." if len(epochs) < 50 else None)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            fig.savefig(self.run_dir / f"{key}.png", dpi=100)
            plt.close(fig)

    # ------------------------------------------------------------------ resume
    def resume(self, path: str | Path) -> None:
        data = torch.load(path, map_location=self.device, weights_only=False)
        if "optimizer" not in data:
            raise ValueError(f"{path}: weights-only file; resume needs last.pt from a training run")
        if config_from_dict(data["model_config"]) != self.model.config:
            raise ValueError(f"{path}: checkpoint model config differs from this run's")
        self.model.load_state_dict(data["model"])
        if self.ema is not None and data.get("ema") is not None:
            self.ema.load_state_dict(data["ema"])
        self.optimizer.load_state_dict(data["optimizer"])
        if self.plateau is not None and data.get("plateau"):
            self.plateau.load_state_dict(data["plateau"])
        self.start_epoch = int(data["epoch"]) + 1
        self.step = int(data["step"])
        self.total_epochs = int(data["total_epochs"])
        self.best_val = float(data["best_val"])
        self.history = list(data["history"])
        rng = data["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"].cpu())
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def source_probs(data: CacheArrays, weights: dict[str, float], shares: bool) -> np.ndarray:
    """Per-sample draw probabilities from per-source weights.

    ``shares=False``: a weight multiplies the source's uniform per-sample probability (unlisted
    sources weigh 1). ``shares=True``: a weight is the source's share of all draws, split evenly
    over its samples (unlisted sources get none).
    """
    unknown = set(weights) - set(data.source_names)
    if unknown:
        raise ValueError(
            f"weights name unknown source(s) {sorted(unknown)}; the cache holds {data.source_names}"
        )
    counts = np.bincount(data.source, minlength=len(data.source_names)).astype(np.float64)
    default = 0.0 if shares else 1.0
    w = np.array([float(weights.get(name, default)) for name in data.source_names])
    if (w < 0).any() or not (w * (counts > 0)).any():
        raise ValueError(f"source weights must be >= 0 and not all zero: {weights}")
    per_sample = w / counts.clip(min=1) if shares else w
    probs = per_sample[data.source]
    return (probs / probs.sum()).astype(np.float32)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, resume: str | Path | None = None) -> Path:
    trainer = Trainer(cfg)
    if resume:
        trainer.resume(resume)
    try:
        return trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
