"""Honest evaluation: full native resolution, logits upsampled to the label size (labels are
never resized), metrics accumulated in one confusion matrix over the whole split.

Test-time augmentation (optional, :class:`TestTimeAugmentation`): the image is also run
resized by each factor of ``scales`` (bilinear, antialiased when shrinking) and, with
``flip``, mirrored; each pass's logits are resized back to the label size (and mirrored
back), turned into softmax probabilities, and the probabilities averaged over the
``len(scales) * (1 + flip)`` passes, as DeepLabV3+ (Chen et al. 2018, Sec. 4.3:
"multi-scale inputs ... left-right flipped inputs") evaluates. The cost is that many
forward passes per image; ``python -m segmodels evaluate --tta-flip --tta-scales ...``
reports the seconds per image it took."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .blocks import upsample_to
from .metrics import ConfusionMatrix, confusion_matrix
from .precision import autocast


def autocast_for(device: torch.device, enabled: bool = True):
    """Autocast on CUDA in :func:`segmodels.precision.autocast_dtype`; a no-op context on CPU."""
    return autocast(device, enabled=enabled and device.type == "cuda")


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Scale factors of the extra passes (1.0 is the plain pass) and whether to add mirrored ones."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self):
        if not self.scales or any(scale <= 0 for scale in self.scales):
            raise ValueError(f"test-time scales must be positive factors, got {self.scales}")

    @property
    def passes(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> dict:
        return {"scales": list(self.scales), "flip": self.flip, "passes": self.passes}


def augmented_probabilities(model: torch.nn.Module, images: torch.Tensor, size: tuple[int, int], tta: TestTimeAugmentation, **forward_options) -> torch.Tensor:
    """Softmax probabilities at ``size`` averaged over the passes of ``tta`` (module docstring)."""
    height, width = images.shape[-2:]
    total = None
    for scale in tta.scales:
        scaled = images if scale == 1.0 else F.interpolate(images, size=(max(1, round(height * scale)), max(1, round(width * scale))), mode="bilinear",
                                                            align_corners=False, antialias=scale < 1)
        for mirrored in (False, True) if tta.flip else (False,):
            logits = model(scaled.flip(-1) if mirrored else scaled, **forward_options).float()
            logits = logits.flip(-1) if mirrored else logits
            probabilities = upsample_to(logits, size).softmax(1)
            total = probabilities if total is None else total + probabilities
    return total / tta.passes


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
    tta: TestTimeAugmentation | None = None,
    **forward_options,
) -> ConfusionMatrix:
    """Run ``model`` over ``dataset`` (items ``(image, mask)`` at native size) and return the
    accumulated confusion matrix. With a ``sampler`` (a DistributedSampler giving each rank its
    shard), matrices are summed over ranks; with ``tta``, test-time augmentation."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler)
    for images, masks in tqdm(loader, desc="evaluate", disable=not show_progress, leave=False):
        images, masks = images.to(device), masks.to(device)
        with autocast_for(device):
            if tta is None:
                scores = upsample_to(model(images, **forward_options).float(), masks.shape[-2:])
            else:
                scores = augmented_probabilities(model, images, masks.shape[-2:], tta, **forward_options)
        matrix.update(scores, masks)
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
