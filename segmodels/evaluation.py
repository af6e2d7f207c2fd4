"""Honest evaluation: full native resolution, logits upsampled to the label size (labels are
never resized), metrics accumulated in one confusion matrix over the whole split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .blocks import upsample_to
from .metrics import ConfusionMatrix, confusion_matrix


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (fp16 where bf16 is unsupported); a no-op context on CPU."""
    if device.type != "cuda" or not enabled:
        return torch.autocast(device.type, enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int | None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    show_progress: bool = False,
    sampler=None,
    **forward_options,
) -> ConfusionMatrix:
    """Run ``model`` over ``dataset`` (items ``(image, mask)`` at native size) and return the
    accumulated confusion matrix. With a ``sampler`` (a DistributedSampler giving each rank its
    shard), matrices are summed over ranks."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler)
    for images, masks in tqdm(loader, desc="evaluate", disable=not show_progress, leave=False):
        images, masks = images.to(device), masks.to(device)
        with autocast_for(device):
            logits = model(images, **forward_options)
        matrix.update(upsample_to(logits.float(), masks.shape[-2:]), masks)
    model.train(was_training)
    if sampler is not None:
        matrix.all_reduce()
    return matrix


@torch.inference_mode()
def evaluate_per_image(
    model: torch.nn.Module,
    dataset: Dataset,
    num_classes: int,
    ignore_index: int | None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
    **forward_options,
) -> np.ndarray:
    """One ``K x K`` confusion matrix per image of ``dataset`` (``N x K x K`` int64, in the
    dataset's order), as :func:`evaluate` computes them; their sum is its matrix. What a
    bootstrap over images (``segmodels.bootstrap``) resamples."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    matrices = np.zeros((len(dataset), num_classes, num_classes), dtype=np.int64)
    loader = DataLoader(dataset, batch_size=1, shuffle=False)
    for index, (image, mask) in enumerate(tqdm(loader, desc="evaluate", disable=not show_progress, leave=False)):
        image, mask = image.to(device), mask.to(device)
        with autocast_for(device):
            logits = model(image, **forward_options)
        matrices[index] = confusion_matrix(upsample_to(logits.float(), mask.shape[-2:]), mask, num_classes, ignore_index).cpu().numpy()
    model.train(was_training)
    return matrices


def evaluation_report(matrix: ConfusionMatrix, class_names: list[str] | tuple[str, ...], split: str, num_images: int) -> dict:
    """The JSON report of ``python -m segmodels evaluate``."""
    result = matrix.compute()
    return {
        "split": split,
        "num_images": num_images,
        "miou": result["miou"],
        "pixel_accuracy": result["pixel_accuracy"],
        "mean_class_accuracy": result["mean_class_accuracy"],
        "per_class_iou": {name: iou for name, iou in zip(class_names, result["per_class_iou"])},
        "confusion_matrix": result["confusion_matrix"],
    }


def format_report(report: dict) -> str:
    """A plain-text table of a report for the terminal."""
    lines = [f"split {report['split']}: {report['num_images']} images"]
    lines += [f"  {name:<14} IoU {iou:.4f}" for name, iou in report["per_class_iou"].items()]
    lines.append(f"  mIoU {report['miou']:.4f}   pixel acc {report['pixel_accuracy']:.4f}   mean class acc {report['mean_class_accuracy']:.4f}")
    return "\n".join(lines)


def write_report(report: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, allow_nan=True))
