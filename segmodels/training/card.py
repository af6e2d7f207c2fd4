"""The model card of a training run: one function builds it for every trainer, so that the
card's format lives in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from ..cards import count_flops, count_parameters, device_description, git_commit
from ..data import DatasetInfo
from .config import TrainConfig


def build_card(
    model: nn.Module,
    spec: dict,
    info: DatasetInfo,
    config: TrainConfig,
    *,
    data_split: dict,
    epochs: int,
    kept_epoch: int,
    metrics: dict,
    train_seconds: float,
    device: torch.device,
    world_size: int = 1,
    validate_at_depth: Callable[[int], dict] | None = None,
    extra: dict | None = None,
) -> dict:
    """The card of ``model`` (the weights the run keeps) from its val ``metrics``
    (:meth:`segmodels.metrics.ConfusionMatrix.compute`): the spec, the dataset, the training
    configuration and protocol, mIoU, mean class accuracy (each class's recall averaged),
    per-class IoU, pixel accuracy, size and cost. A model with pruning depths gets one
    ``pruning`` entry per depth, scored by ``validate_at_depth``. ``extra`` adds keys (how a
    lock-step run went, the recipe file)."""
    card = {
        **spec,
        "dataset": info.to_dict(),
        "training": asdict(config),
        "protocol": config.protocol,
        "data_split": data_split,
        "epochs": epochs,
        "best_epoch": kept_epoch,
        "kept": "best validated epoch" if config.keep == "best" else "final epoch",
        "val_miou": metrics["miou"],
        "val_mean_class_accuracy": metrics["mean_class_accuracy"],
        "val_per_class_iou": dict(zip(info.class_names, metrics["per_class_iou"])),
        "val_pixel_accuracy": metrics["pixel_accuracy"],
        "params": count_parameters(model),
        "flops": count_flops(model, tuple(config.flops_size)),
        "flops_input_size": list(config.flops_size),
        "train_seconds": round(train_seconds, 1),
        "train_device": device_description(device),
        "world_size": world_size,
        "git_commit": git_commit(),
    }
    if config.protocol == "train+val":
        card["val_seen_in_training"] = True
    if config.ema_decay:
        card["weights"] = f"exponential moving average of the weights, decay {config.ema_decay}"
    if getattr(model, "pruning_depths", ()) and validate_at_depth is not None:
        card["pruning"] = [
            {"depth": d, "val_miou": validate_at_depth(d)["miou"], "params": count_parameters(model, depth=d), "flops": count_flops(model, tuple(config.flops_size), depth=d)}
            for d in model.pruning_depths
        ]
    return card | (extra or {})
