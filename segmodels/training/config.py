"""What defines a training run (:class:`TrainConfig`, saved in checkpoints and model cards)
and the small pieces every trainer shares: seeding, the learning-rate schedule, atomic saves."""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..evaluation import autocast_for

PHOTOMETRIC = ("none", "jitter", "strong")
KEEP = ("best", "final")
PROTOCOLS = ("train", "train+val")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in checkpoints and model cards).

    The recipe levers default to what the fair set was trained with: ``photometric``
    ``jitter`` (colour jitter 0.3/0.3/0.3/0.03), no weight averaging (``ema_decay`` 0),
    ``keep`` the best validated checkpoint, ``protocol`` ``train`` (val held out)."""

    arch: str = "unet"
    encoder: str = "plain"
    pretrained: bool = True
    base_channels: int = 64
    options: dict = field(default_factory=dict)
    dataset: str = "shapes"
    data_root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    train_images: int | None = None
    val_images: int | None = None
    crop_size: tuple[int, int] = (128, 128)
    scale_range: tuple[float, float] = (0.5, 2.0)
    loss: str = "ce"
    focal_gamma: float = 2.0
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    schedule: str = "poly"
    seed: int = 0
    val_every: int = 1
    workers: int = 2
    output_dir: str = "runs/default"
    flops_size: tuple[int, int] = (360, 480)
    device: str | None = None
    loss_options: dict = field(default_factory=dict)
    photometric: str = "jitter"
    ema_decay: float = 0.0
    keep: str = "best"
    protocol: str = "train"

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.crop_size = tuple(config.crop_size)
        config.scale_range = tuple(config.scale_range)
        config.flops_size = tuple(config.flops_size)
        return config

    def check_levers(self) -> None:
        """Raise a ``ValueError`` naming a lever set to a value it does not take."""
        if self.photometric not in PHOTOMETRIC:
            raise ValueError(f"photometric must be one of {', '.join(PHOTOMETRIC)}, got {self.photometric!r}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1) (0: no averaging), got {self.ema_decay}")
        if self.protocol == "train+val" and self.keep != "final":
            raise ValueError("protocol train+val trains on val, so val cannot choose the checkpoint: set keep: final")


def lever_defaults() -> dict:
    """The recipe levers' field values when off (what cards written before them mean)."""
    return {name: getattr(TrainConfig(), name) for name in ("loss_options", "photometric", "ema_decay", "keep", "protocol")}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_atomically(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename: a run killed mid-write keeps its old checkpoint."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Linear warm-up, then ``poly`` (1 - t)^0.9 (DeepLab) or ``cosine`` decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "poly":
        return (1 - progress) ** 0.9
    raise ValueError(f"schedule must be 'poly' or 'cosine', got {schedule!r}")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weight matrices and kernels, none on biases and norms."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimisation_step(model, images, masks, criterion, optimizer, scaler, scheduler, device: torch.device) -> torch.Tensor:
    """One step of either trainer: the loss averaged over every output the model returns (its
    deep-supervision heads too), under autocast on CUDA, scaled backward, optimizer and
    schedule stepped; returns the loss."""
    with autocast_for(device):
        outputs = model(images, return_all=True)
        loss = sum(criterion(out.float(), masks) for out in outputs) / len(outputs)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss
