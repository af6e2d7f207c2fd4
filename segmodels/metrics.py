"""Confusion-matrix based segmentation metrics.

The confusion matrix ``M`` is ``K x K`` with rows = ground truth and columns = prediction.
Per class ``IoU_c = TP / (TP + FP + FN) = M_cc / (sum_j M_cj + sum_i M_ic - M_cc)``; mIoU is
the mean over the classes present in the ground truth or the prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

ERROR_TN, ERROR_TP, ERROR_FP, ERROR_FN = 0, 1, 2, 3


def _labels(pred: Tensor, target: Tensor) -> Tensor:
    """``pred`` as labels: argmax over dim 1 when it carries a class dimension."""
    if pred.dim() == target.dim() + 1:
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    return pred


def _check_range(values: Tensor, num_classes: int, what: str, ignore_index: int | None) -> None:
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        found = torch.unique(values[bad])[:10].tolist()
        allowed = f"[0, {num_classes})" + ("" if ignore_index is None else f" or ignore_index={ignore_index}")
        raise ValueError(f"{what} values must lie in {allowed}; found {found} (wrong mask values?)")


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """``K x K`` int64 matrix of (ground truth, prediction) pixel counts; ``pred`` may be
    labels shaped like ``target`` or logits with the class dimension at dim 1."""
    pred = _labels(pred, target).long()
    target = target.long().to(pred.device)
    if ignore_index is not None:
        valid = target != ignore_index
        pred, target = pred[valid], target[valid]
    else:
        pred, target = pred.reshape(-1), target.reshape(-1)
    _check_range(target, num_classes, "target", ignore_index)
    _check_range(pred, num_classes, "prediction", None)
    counts = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def iou_from_confusion(matrix: Tensor) -> Tensor:
    """Per-class IoU (float64); NaN for classes absent from both ground truth and prediction."""
    matrix = matrix.double()
    tp = matrix.diagonal()
    union = matrix.sum(1) + matrix.sum(0) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean IoU over the classes present in the ground truth or the prediction."""
    return float(torch.nanmean(iou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))))


class ConfusionMatrix:
    """Accumulates a ``K x K`` int64 confusion matrix over batches.

    With ``device`` None the matrix follows the device of the targets passed to
    :meth:`update`; otherwise inputs are moved to ``device``. Matrices of several processes
    combine with :meth:`merge`, ``+`` or :meth:`all_reduce`.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None, device: torch.device | str | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.device = None if device is None else torch.device(device)
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.long, device=self.device)

    @classmethod
    def from_counts(cls, counts: Tensor | np.ndarray, ignore_index: int | None = None) -> ConfusionMatrix:
        """A matrix holding ``counts`` (``K x K``, rows ground truth), e.g. a sum of per-image matrices."""
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.long)
        matrix = cls(counts.shape[0], ignore_index=ignore_index)
        matrix._matrix = counts.clone()
        return matrix

    @property
    def matrix(self) -> Tensor:
        return self._matrix

    def reset(self) -> None:
        self._matrix.zero_()

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch: ``pred`` labels shaped like ``target``, or logits ``B x K x H x W``."""
        device = self.device if self.device is not None else target.device
        if self._matrix.device != device:
            self._matrix = self._matrix.to(device)
        self._matrix += confusion_matrix(pred.to(device), target.to(device), self.num_classes, self.ignore_index)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add ``other``'s counts into this matrix (in place) and return ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class into {self.num_classes}-class matrix")
        self._matrix += other.matrix.to(self._matrix.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        result = ConfusionMatrix(self.num_classes, self.ignore_index, self._matrix.device)
        result._matrix = self._matrix.clone()
        return result.merge(other)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the matrix over all ``torch.distributed`` ranks; no-op when not initialised."""
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._matrix, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict[str, Any]:
        """``miou``, ``per_class_iou``, ``pixel_accuracy``, ``mean_class_accuracy``,
        ``confusion_matrix`` and ``present``; metrics with nothing to average are NaN."""
        matrix = self._matrix.cpu()
        counts = matrix.double()
        tp = counts.diagonal()
        gt = counts.sum(1)
        iou = iou_from_confusion(matrix)
        total = counts.sum()
        in_gt = gt > 0
        return {
            "miou": float(torch.nanmean(iou)),
            "per_class_iou": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_class_accuracy": float((tp[in_gt] / gt[in_gt]).mean()) if in_gt.any() else float("nan"),
            "confusion_matrix": matrix.tolist(),
            "present": (~iou.isnan()).tolist(),
        }


def iou_error_map(
    pred: Tensor | np.ndarray, target: Tensor | np.ndarray, class_index: int, ignore_index: int | None = None
) -> np.ndarray:
    """uint8 map for one class: 0 true negative or ignored, 1 TP, 2 FP, 3 FN."""
    pred = pred.detach().cpu().numpy() if isinstance(pred, Tensor) else np.asarray(pred)
    target = target.detach().cpu().numpy() if isinstance(target, Tensor) else np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match target shape {target.shape}")
    is_pred = pred == class_index
    is_true = target == class_index
    codes = np.full(target.shape, ERROR_TN, dtype=np.uint8)
    codes[is_pred & is_true] = ERROR_TP
    codes[is_pred & ~is_true] = ERROR_FP
    codes[~is_pred & is_true] = ERROR_FN
    if ignore_index is not None:
        codes[target == ignore_index] = ERROR_TN
    return codes
