"""How sure a dataset-level score is: bootstrap intervals over the images of a test set.

A dataset's mIoU comes from one confusion matrix summed over its images (``metrics``), so the
unit that varies between test sets is the *image*, not the pixel: neighbouring pixels of one
frame are far from independent. The percentile bootstrap (Efron & Tibshirani, "An
Introduction to the Bootstrap", 1993, ch. 13) draws ``n`` of the ``n`` images with
replacement, sums their per-image confusion matrices, computes the mIoU of that resampled set,
and repeats ``B`` times; the 2.5th and 97.5th percentiles of the ``B`` values bound a 95%
interval.

Two models evaluated on the *same* images are compared with a **paired** bootstrap: each
resample draws one set of image indices and computes both models' mIoU on it, so the
interval is the one of the difference ``mIoU_a - mIoU_b``; the images that are hard for
both cancel out. A difference is called real only when its interval excludes zero.
:func:`against_best` compares every model of a set with the best of them this way.

Training noise is another source: the same recipe with another seed scores differently.
When the spread of seeds is known (measured at a fixed final epoch), :func:`widen` adds it in
quadrature to the bootstrap half-widths: two independently trained models differ by seed
noise of standard deviation ``sqrt(2) * sigma_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
Z_95 = 1.959964


@dataclass(frozen=True)
class Interval:
    """A ``level`` confidence interval ``[low, high]`` around ``estimate``."""

    estimate: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level}

    @classmethod
    def from_dict(cls, values: dict) -> Interval:
        return cls(float(values["estimate"]), float(values["low"]), float(values["high"]), float(values.get("level", DEFAULT_LEVEL)))


def per_class_iou(matrices: np.ndarray) -> np.ndarray:
    """IoU of every class of ``... x K x K`` confusion matrices (rows ground truth):
    ``TP / (TP + FP + FN)``, NaN where a class is absent from ground truth and prediction."""
    counts = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(counts, axis1=-2, axis2=-1)
    union = counts.sum(-1) + counts.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(matrices: np.ndarray) -> np.ndarray:
    """mIoU of each ``K x K`` matrix: the mean over the classes present (as ``metrics.miou``)."""
    iou = per_class_iou(matrices)
    present = ~np.isnan(iou)
    return np.where(present, iou, 0).sum(-1) / np.maximum(present.sum(-1), 1)


def resample_weights(num_images: int, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """``resamples x num_images`` counts: how often each image is drawn in each resample
    (``num_images`` draws with replacement, a fixed ``seed``)."""
    if num_images < 1:
        raise ValueError("a bootstrap needs at least one image")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    return rng.multinomial(num_images, np.full(num_images, 1 / num_images), size=resamples).astype(np.float64)


def resampled_matrices(per_image: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The summed confusion matrix of every resample: ``weights @ per_image`` (``B x K x K``)."""
    per_image = np.asarray(per_image)
    if per_image.ndim != 3 or per_image.shape[1] != per_image.shape[2]:
        raise ValueError(f"per-image confusion matrices must be N x K x K, got shape {per_image.shape}")
    if per_image.shape[0] != weights.shape[1]:
        raise ValueError(f"{per_image.shape[0]} images but the resample weights are for {weights.shape[1]}")
    num_classes = per_image.shape[1]
    flat = per_image.reshape(per_image.shape[0], -1).astype(np.float64)
    return (weights @ flat).reshape(-1, num_classes, num_classes)


def _percentiles(estimate: float, samples: np.ndarray, level: float) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(samples, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)


@dataclass(frozen=True)
class BootstrapResult:
    """The dataset mIoU and each class's IoU with their percentile intervals."""

    miou: Interval
    per_class_iou: tuple[Interval, ...]
    resamples: int
    seed: int


def bootstrap(per_image: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> BootstrapResult:
    """Percentile intervals of the mIoU and of every class's IoU of a set of images, from
    their ``N x K x K`` confusion matrices."""
    per_image = np.asarray(per_image)
    weights = resample_weights(per_image.shape[0], resamples, seed)
    matrices = resampled_matrices(per_image, weights)
    total = per_image.sum(0)
    class_samples = per_class_iou(matrices)
    class_estimates = per_class_iou(total)
    with np.errstate(all="ignore"):
        classes = tuple(
            _percentiles(class_estimates[c], class_samples[:, c], level) if not np.all(np.isnan(class_samples[:, c])) else Interval(float("nan"), float("nan"), float("nan"), level)
            for c in range(per_image.shape[1])
        )
    return BootstrapResult(_percentiles(float(mean_iou(total)), mean_iou(matrices), level), classes, resamples, seed)


def paired_difference(per_image_a: np.ndarray, per_image_b: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL) -> Interval:
    """Interval of ``mIoU_a - mIoU_b`` over the same images, both models resampled with the
    same image indices (a paired bootstrap)."""
    per_image_a, per_image_b = np.asarray(per_image_a), np.asarray(per_image_b)
    if per_image_a.shape != per_image_b.shape:
        raise ValueError(f"a paired bootstrap needs the same images for both models: shapes {per_image_a.shape} and {per_image_b.shape}")
    weights = resample_weights(per_image_a.shape[0], resamples, seed)
    samples = mean_iou(resampled_matrices(per_image_a, weights)) - mean_iou(resampled_matrices(per_image_b, weights))
    estimate = float(mean_iou(per_image_a.sum(0)) - mean_iou(per_image_b.sum(0)))
    return _percentiles(estimate, samples, level)


def widen(interval: Interval, seed_std: float | None) -> Interval:
    """Add training noise to a difference's interval: each half-width grows in quadrature by
    ``z * sqrt(2) * seed_std`` (two models, each one seed of its recipe). ``None`` (not
    measured) leaves the interval as it is."""
    if not seed_std:
        return interval
    extra = Z_95 * np.sqrt(2) * seed_std
    below = float(np.hypot(interval.estimate - interval.low, extra))
    above = float(np.hypot(interval.high - interval.estimate, extra))
    return Interval(interval.estimate, interval.estimate - below, interval.estimate + above, interval.level)


BETTER, WORSE, NOT_DISTINGUISHABLE = "better", "worse", "not distinguishable"


def verdict(difference: Interval) -> str:
    """``better`` when the whole interval of ``a - b`` lies above zero, ``worse`` when below,
    else ``not distinguishable``."""
    if difference.low > 0:
        return BETTER
    if difference.high < 0:
        return WORSE
    return NOT_DISTINGUISHABLE


@dataclass(frozen=True)
class Entrant:
    """One model in :func:`against_best`: its test mIoU, its ``N x K x K`` per-image confusion
    matrices (None where they could not be read, ``problem`` saying why), and the resample count
    and seed of its test record."""

    miou: float
    per_image: np.ndarray | None
    problem: str | None = None
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED


@dataclass(frozen=True)
class Standing:
    """One model against the best: ``difference`` is the paired interval of its mIoU minus the
    best's; None for the best itself and for a model not compared (``problem`` says why: its
    matrices or the best's could not be read, or they cover different images)."""

    best: bool
    difference: Interval | None = None
    problem: str | None = None

    @property
    def verdict(self) -> str | None:
        return None if self.difference is None else verdict(self.difference)


def against_best(entrants: Sequence[Entrant], level: float = DEFAULT_LEVEL) -> list[Standing]:
    """Every entrant against the one with the highest mIoU (the first of equals): a paired
    bootstrap (:func:`paired_difference`) over the same images, with the best's resample count
    and seed. One standing per entrant, in their order; the best's carries its own ``problem``."""
    if not entrants:
        return []
    best = max(entrants, key=lambda entrant: entrant.miou)
    standings = []
    for entrant in entrants:
        if entrant is best:
            standings.append(Standing(best=True, problem=best.problem))
        elif entrant.per_image is None or best.per_image is None:
            standings.append(Standing(best=False, problem=entrant.problem or best.problem))
        elif entrant.per_image.shape != best.per_image.shape:
            standings.append(Standing(best=False, problem=f"{entrant.per_image.shape[0]} test images against {best.per_image.shape[0]}"))
        else:
            standings.append(Standing(best=False, difference=paired_difference(entrant.per_image, best.per_image, best.resamples, best.seed, level)))
    return standings
