"""Segmentation losses and class-weighting schemes.

Every loss takes logits ``B x K x H x W`` and integer targets ``B x H x W``; pixels whose
target equals ``ignore_index`` contribute nothing, to the loss nor to its normaliser.

Class weights, from per-class pixel counts ``N_c`` with ``N = sum_c N_c``:

* inverse share: ``w_c = (N - N_c) / N``;
* median-frequency balancing (Eigen & Fergus 2015, as used by SegNet):
  ``freq_c = N_c / P_c`` with ``P_c`` the pixels of the images containing class ``c``,
  ``w_c = median(freq) / freq_c``.

Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection", Sec. 3):
``FL(p_t) = -w_t (1 - p_t)^gamma log(p_t)``; ``gamma = 0`` is (weighted) cross-entropy.

Online hard example mining (OHEM) cross-entropy (Shrivastava et al., CVPR 2016, applied to
pixels as in Wu et al., "Bridging category-level and instance-level semantic image
segmentation", 2016): only the pixels whose true-class probability is below a threshold
(0.7) count, and never fewer than the ``min_kept`` hardest ones.

Square-root median-frequency weights ``sqrt(median(freq) / freq_c)`` halve the log-ratio of
the weights: median-frequency CE over-predicts the rare classes (its mean class accuracy
runs far above its mIoU on CamVid), the square root keeps part of the balance.

Lovász-Softmax (Berman, Rannen Triki & Blaschko, CVPR 2018), a convex surrogate of the
Jaccard loss ``Delta_Jc = 1 - |{y*=c} & {y~=c}| / |{y*=c} | {y~=c}|``: with softmax
probabilities ``f_i(c)``, the pixel errors (Eq. 11) ``m_i(c) = 1 - f_i(c)`` where
``y*_i = c`` and ``f_i(c)`` elsewhere, and the Lovász extension of a set function (Eq. 8-9)
``bar Delta(m) = sum_i m_{pi_i} g_i(m)``, ``g_i = Delta({pi_1..pi_i}) - Delta({pi_1..pi_{i-1}})``
with ``pi`` ordering ``m`` decreasingly, the loss (Eq. 12) averages ``bar Delta_Jc(m(c))``
over the classes; here over the classes present in the batch's labels (the authors' code's
default), computed over the whole batch (the dataset-mIoU flavour of Sec. 3.3).

Class-balanced warm-up: median-frequency weights annealed linearly to 1 over the first
``balanced_epochs`` epochs, plain CE afterwards (the loss is told the epoch by
``start_epoch``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOSS_NAMES = ("ce", "wce", "mfb", "focal", "wfocal", "ohem", "smfb", "ce_lovasz", "mfb_warmup")


def _as_mask(mask: Any) -> Tensor:
    return (mask if isinstance(mask, Tensor) else torch.as_tensor(np.asarray(mask))).long()


def _per_image_counts(mask: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Per-class pixel counts of each image: ``I x K`` for a mask ``H x W`` or ``I x H x W``."""
    images = mask.reshape(-1, mask.shape[-2] * mask.shape[-1]) if mask.dim() >= 2 else mask.reshape(1, -1)
    valid = images != ignore_index
    values = images[valid]
    bad = (values < 0) | (values >= num_classes)
    if bad.any():
        found = torch.unique(values[bad])[:10].tolist()
        raise ValueError(
            f"mask values must lie in [0, {num_classes}) or equal ignore_index={ignore_index}; found {found}"
        )
    rows = torch.arange(images.shape[0], device=images.device).unsqueeze(1).expand_as(images)[valid]
    flat = torch.bincount(rows * num_classes + values, minlength=images.shape[0] * num_classes)
    return flat.view(images.shape[0], num_classes)


def pixel_counts(masks: Tensor | np.ndarray, num_classes: int, ignore_index: int = -100) -> Tensor:
    """Per-class pixel counts (int64, length K) of a mask or a batch of masks."""
    return _per_image_counts(_as_mask(masks), num_classes, ignore_index).sum(0)


def dataset_class_statistics(
    masks: Iterable[Any], num_classes: int, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """``(counts, image_counts)`` over an iterable of masks, batches of masks, or samples
    whose last element is the mask. ``image_counts[c]`` sums the non-ignored pixels of the
    images in which class ``c`` is present (the denominator of median-frequency balancing)."""
    counts = torch.zeros(num_classes, dtype=torch.long)
    image_counts = torch.zeros(num_classes, dtype=torch.long)
    for item in masks:
        mask = item[-1] if isinstance(item, (tuple, list)) else item
        per_image = _per_image_counts(_as_mask(mask), num_classes, ignore_index).cpu()
        counts += per_image.sum(0)
        image_counts += ((per_image > 0) * per_image.sum(1, keepdim=True)).sum(0)
    return counts, image_counts


def dataset_pixel_counts(masks: Iterable[Any], num_classes: int, ignore_index: int = -100) -> Tensor:
    """Per-class pixel counts accumulated over an iterable of masks (or ``(image, mask)`` pairs)."""
    return dataset_class_statistics(masks, num_classes, ignore_index)[0]


def class_weights_inverse_share(counts: Tensor | np.ndarray | list[int]) -> Tensor:
    """``w_c = (N - N_c) / N``, one minus the class's pixel share: with more than two classes
    most weights are close to 1 and only a dominant class falls clearly below it."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    total = counts.sum()
    if total <= 0:
        raise ValueError("class counts sum to zero; cannot derive class weights")
    return ((total - counts) / total).float()


def class_weights_median_frequency(
    counts: Tensor | np.ndarray | list[int], image_counts: Tensor | np.ndarray | list[int] | None = None
) -> Tensor:
    """Median-frequency balancing: ``freq_c = N_c / P_c``, ``w_c = median(freq) / freq_c``.

    ``P_c`` is ``image_counts[c]`` (pixels of the images containing class ``c``), or the
    total ``N`` for every class when ``image_counts`` is None. The median is taken over the
    classes with a non-zero count (the mean of the two middle values for an even number);
    classes with zero count get weight 0.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if image_counts is None:
        denominator = torch.full_like(counts, counts.sum().item())
    else:
        denominator = torch.as_tensor(image_counts, dtype=torch.float64)
        if denominator.shape != counts.shape:
            raise ValueError(f"image_counts has shape {tuple(denominator.shape)}, counts {tuple(counts.shape)}")
    present = counts > 0
    if not present.any():
        raise ValueError("class counts sum to zero; cannot derive class weights")
    if (denominator[present] <= 0).any():
        raise ValueError("image_counts must be positive for every class with a non-zero count")
    freq = counts[present] / denominator[present]
    weights = torch.zeros_like(counts)
    weights[present] = torch.quantile(freq, 0.5) / freq
    return weights.float()


def class_weights_sqrt_median_frequency(
    counts: Tensor | np.ndarray | list[int], image_counts: Tensor | np.ndarray | list[int] | None = None
) -> Tensor:
    """``sqrt(median(freq) / freq_c)``: :func:`class_weights_median_frequency`, square-rooted."""
    return class_weights_median_frequency(counts, image_counts).sqrt()


def _weighted_mean(per_pixel: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int) -> Tensor:
    """Sum of ``per_pixel`` over the sum of the target weights of the non-ignored pixels, as
    ``F.cross_entropy`` normalises; 0 (with a gradient) when nothing counts."""
    valid = target != ignore_index
    if weight is None:
        denominator = valid.sum().to(per_pixel.dtype)
    else:
        safe = torch.where(valid, target, torch.zeros_like(target))
        denominator = (weight.to(per_pixel.dtype)[safe] * valid).sum()
    return per_pixel.sum() / denominator.clamp_min(torch.finfo(per_pixel.dtype).tiny)


class WeightedCrossEntropyLoss(nn.Module):
    """Cross-entropy ``-w_t log p_t``, mean-normalised by the summed target weights of the
    non-ignored pixels (as ``F.cross_entropy``); returns 0 rather than NaN when every pixel
    is ignored."""

    def __init__(self, weight: Tensor | None = None, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = target.long()
        weight = None if self.weight is None else self.weight.to(logits.dtype)
        per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=self.ignore_index, reduction="none")
        return _weighted_mean(per_pixel, target, weight, self.ignore_index)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017, Sec. 3): ``-w_t (1 - p_t)^gamma log p_t`` per pixel,
    from ``log_softmax`` for stability. ``weight`` plays the role of the paper's
    ``alpha_t``. ``reduction='mean'`` divides by the summed target weights of the non-ignored
    pixels (their number without weights), so ``gamma=0`` equals :class:`WeightedCrossEntropyLoss`."""

    def __init__(
        self, gamma: float = 2.0, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = target.long()
        valid = target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        log_probs = F.log_softmax(logits.float(), dim=1)
        log_pt = log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)
        one_minus_pt = (-torch.expm1(log_pt)).clamp_min(torch.finfo(log_pt.dtype).tiny)
        per_pixel = -one_minus_pt.pow(self.gamma) * log_pt
        weight = None if self.weight is None else self.weight.to(per_pixel.dtype)
        if weight is not None:
            per_pixel = per_pixel * weight[safe]
        per_pixel = per_pixel * valid
        if self.reduction == "none":
            return per_pixel
        if self.reduction == "sum":
            return per_pixel.sum()
        return _weighted_mean(per_pixel, target, weight, self.ignore_index)


class OhemCrossEntropyLoss(nn.Module):
    """Cross-entropy averaged over the hard pixels only: those whose true-class probability
    ``p_t < threshold``, or the ``min_kept_fraction`` of valid pixels with the largest loss
    when fewer are that hard. Easy pixels (most of the road and sky) then stop dominating."""

    def __init__(self, threshold: float = 0.7, min_kept_fraction: float = 1 / 16, ignore_index: int = -100):
        super().__init__()
        if not 0 < threshold <= 1 or not 0 < min_kept_fraction <= 1:
            raise ValueError(f"need 0 < threshold <= 1 and 0 < min_kept_fraction <= 1, got {threshold}, {min_kept_fraction}")
        self.loss_threshold = -math.log(threshold)
        self.min_kept_fraction = min_kept_fraction
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = target.long()
        per_pixel = F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index, reduction="none").flatten()
        valid = target.flatten() != self.ignore_index
        losses = per_pixel[valid]
        if losses.numel() == 0:
            return per_pixel.sum() * 0.0
        min_kept = max(1, int(losses.numel() * self.min_kept_fraction))
        hard = losses[losses > self.loss_threshold]
        if hard.numel() < min_kept:
            hard = losses.topk(min_kept).values
        return hard.mean()


def lovasz_jaccard_gradient(truth_sorted: Tensor) -> Tensor:
    """``g(m)`` of Eq. 9 for the Jaccard loss, along dim 0: ``truth_sorted`` holds 1 where the
    pixel belongs to the class, pixels ordered by decreasing error. The first ``i`` pixels
    as the mispredicted set give ``Delta_J = 1 - (G - cumsum(truth)) / (G + cumsum(1 - truth))``
    with ``G`` the class's pixels; ``g`` is its backward difference."""
    total = truth_sorted.sum(0, keepdim=True)
    intersection = total - truth_sorted.cumsum(0)
    union = total + (1 - truth_sorted).cumsum(0)
    jaccard_loss = 1 - intersection / union.clamp_min(1)
    return torch.cat([jaccard_loss[:1], jaccard_loss[1:] - jaccard_loss[:-1]])


def lovasz_softmax(probabilities: Tensor, labels: Tensor) -> Tensor:
    """Lovász-Softmax (Eq. 12) of ``P x K`` probabilities against ``P`` labels in ``[0, K)``,
    averaged over the classes present in ``labels``; all classes at once, one sort per class."""
    truth = F.one_hot(labels, probabilities.shape[1]).to(probabilities.dtype)
    errors = (truth - probabilities).abs()
    errors_sorted, order = errors.sort(0, descending=True)
    per_class = (errors_sorted * lovasz_jaccard_gradient(truth.gather(0, order))).sum(0)
    return per_class[truth.sum(0) > 0].mean()


class CrossEntropyLovaszLoss(nn.Module):
    """``CE + lovasz_weight * Lovász-Softmax``: the pixel-wise term keeps the gradients of the
    early, poorly ranked predictions useful; the Lovász term optimises the per-class IoU."""

    def __init__(self, lovasz_weight: float = 1.0, ignore_index: int = -100):
        super().__init__()
        if lovasz_weight < 0:
            raise ValueError(f"lovasz_weight must be >= 0, got {lovasz_weight}")
        self.lovasz_weight = float(lovasz_weight)
        self.ignore_index = ignore_index
        self.cross_entropy = WeightedCrossEntropyLoss(ignore_index=ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = target.long()
        cross_entropy = self.cross_entropy(logits, target)
        valid = (target != self.ignore_index).flatten()
        if not valid.any():
            return cross_entropy
        probabilities = F.softmax(logits.float(), dim=1).movedim(1, -1).reshape(-1, logits.shape[1])[valid]
        return cross_entropy + self.lovasz_weight * lovasz_softmax(probabilities, target.flatten()[valid])


class BalancedWarmupCrossEntropyLoss(WeightedCrossEntropyLoss):
    """Cross-entropy whose class weights go linearly from ``balanced_weight`` at epoch 0 to 1
    at epoch ``balanced_epochs``: ``w_c(e) = 1 + (w_c - 1) max(0, 1 - e / balanced_epochs)``;
    plain CE from then on. Call :meth:`start_epoch` before each epoch."""

    def __init__(self, balanced_weight: Tensor, balanced_epochs: float, ignore_index: int = -100):
        if balanced_epochs <= 0:
            raise ValueError(f"balanced_epochs must be > 0, got {balanced_epochs}")
        super().__init__(balanced_weight, ignore_index)
        self.register_buffer("balanced_weight", torch.as_tensor(balanced_weight, dtype=torch.float32).clone())
        self.balanced_epochs = float(balanced_epochs)

    def start_epoch(self, epoch: int) -> None:
        share = max(0.0, 1.0 - epoch / self.balanced_epochs)
        self.weight.copy_(1 + (self.balanced_weight - 1) * share)


LOSS_OPTIONS = {"ohem": ("threshold", "min_kept_fraction"), "ce_lovasz": ("lovasz_weight",), "mfb_warmup": ("balanced_epochs",),
                "focal": (), "wfocal": ()}


def build_loss(
    name: str,
    num_classes: int,
    class_counts: Tensor | np.ndarray | list[int] | None = None,
    ignore_index: int = -100,
    gamma: float = 2.0,
    image_counts: Tensor | np.ndarray | list[int] | None = None,
    options: dict | None = None,
) -> nn.Module:
    """Loss by name: ``ce``, ``wce`` (weights ``(N - N_c) / N``), ``mfb`` (median-frequency
    weighted CE, using ``image_counts`` when given), ``smfb`` (its square root), ``focal``,
    ``wfocal`` (focal with the ``(N - N_c) / N`` weights), ``ohem`` (CE over the hard pixels;
    options ``threshold``, ``min_kept_fraction``), ``ce_lovasz`` (CE + Lovász-Softmax; option
    ``lovasz_weight``), ``mfb_warmup`` (median-frequency weights annealed to plain CE; option
    ``balanced_epochs``, default 10). Weighted losses need ``class_counts`` of length ``num_classes``."""
    if name not in LOSS_NAMES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(LOSS_OPTIONS.get(name, ())))
    if unknown:
        accepted = ", ".join(LOSS_OPTIONS.get(name, ())) or "none"
        raise ValueError(f"loss {name!r} takes no option {', '.join(unknown)}; it accepts: {accepted}")
    if name == "ce":
        return WeightedCrossEntropyLoss(ignore_index=ignore_index)
    if name == "focal":
        return FocalLoss(gamma=gamma, ignore_index=ignore_index)
    if name == "ohem":
        return OhemCrossEntropyLoss(ignore_index=ignore_index, **options)
    if name == "ce_lovasz":
        return CrossEntropyLovaszLoss(ignore_index=ignore_index, **options)
    if class_counts is None:
        raise ValueError(f"loss {name!r} is class-weighted and needs class_counts (per-class pixel counts)")
    counts = torch.as_tensor(class_counts)
    if counts.shape != (num_classes,):
        raise ValueError(f"class_counts must have length {num_classes}, got shape {tuple(counts.shape)}")
    if name == "mfb":
        return WeightedCrossEntropyLoss(class_weights_median_frequency(counts, image_counts), ignore_index)
    if name == "smfb":
        return WeightedCrossEntropyLoss(class_weights_sqrt_median_frequency(counts, image_counts), ignore_index)
    if name == "mfb_warmup":
        return BalancedWarmupCrossEntropyLoss(class_weights_median_frequency(counts, image_counts), options.get("balanced_epochs", 10), ignore_index)
    weight = class_weights_inverse_share(counts)
    if name == "wce":
        return WeightedCrossEntropyLoss(weight, ignore_index)
    return FocalLoss(gamma=gamma, weight=weight, ignore_index=ignore_index)


def focal_curve(p: np.ndarray | list[float] | float, gamma: float) -> np.ndarray:
    """``-(1 - p)^gamma log p`` for probabilities ``p`` of the true class."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -((1.0 - p) ** gamma) * np.log(p)


def cross_entropy_curve(p: np.ndarray | list[float] | float) -> np.ndarray:
    """``-log p``: the focal curve at ``gamma = 0``."""
    return focal_curve(p, 0.0)
