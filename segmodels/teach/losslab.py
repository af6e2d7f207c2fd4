"""Loss lab: train a tiny U-Net on Imbalanced Shapes for a few seconds with one loss and
watch what the loss does to the rare class.

The set (:func:`segmodels.data.shapes.render_imbalanced_shapes`) has one rare, small class,
the triangles. With per-class pixel counts ``N_c`` over the training masks, ``N = sum_c N_c``,
and ``p_t`` the predicted probability of a pixel's true class, the five losses are
(:func:`segmodels.losses.build_loss`):

* ``ce``: cross-entropy ``-log p_t``;
* ``wce``: weighted CE ``-w_t log p_t`` with ``w_c = (N - N_c) / N``;
* ``mfb``: weighted CE with median-frequency weights ``w_c = median(freq) / freq_c``,
  ``freq_c = N_c / P_c`` (Eigen & Fergus, ICCV 2015);
* ``focal``: ``-(1 - p_t)^gamma log p_t`` (Lin et al., ICCV 2017, Eq. 4);
* ``wfocal``: ``-w_t (1 - p_t)^gamma log p_t`` with the ``(N - N_c) / N`` weights (Eq. 5,
  the weights in the role of ``alpha_t``).

:func:`run_loss_lab` is a generator: it yields a progress record every ``eval_every`` steps
(per-class IoU and accuracy on a fixed held-out batch), so a caller can stream the curves,
and stops at the time budget, after ``max_steps``, when ``should_stop()`` returns True, or
when the caller closes it. It runs on ``threads`` CPU threads and gives the process back its
own thread count whenever control returns to the caller.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data.info import SHAPES
from ..data.shapes import RARE_CLASS, RARE_EXTENT, RARE_IMAGE_FRACTION, check_imbalance_options, render_imbalanced_shapes
from ..losses import build_loss, dataset_class_statistics
from ..metrics import ConfusionMatrix
from ..models import create_model

LAB_LOSSES = ("ce", "wce", "mfb", "focal", "wfocal")
LOSS_LABELS = {
    "ce": "cross-entropy",
    "wce": "weighted CE, (N - N_c)/N",
    "mfb": "median-frequency weighted CE",
    "focal": "focal",
    "wfocal": "weighted focal, (N - N_c)/N",
}
LOSS_FORMULAS = {
    "ce": "-log p_t",
    "wce": "-w_t log p_t,  w_c = (N - N_c) / N",
    "mfb": "-w_t log p_t,  w_c = median(freq) / freq_c,  freq_c = N_c / P_c",
    "focal": "-(1 - p_t)^gamma log p_t",
    "wfocal": "-w_t (1 - p_t)^gamma log p_t,  w_c = (N - N_c) / N",
}
MAX_GAMMA = 10.0
EVAL_SEED_OFFSET = 1000


@dataclass(frozen=True)
class LabSettings:
    """Everything that defines a loss-lab run besides the loss itself: a plain-encoder U-Net
    ``base_channels`` wide, trained with Adam (Kingma & Ba, ICLR 2015) on random batches of
    ``batch_size`` unaugmented ``image_size``-pixel images. A run stops after ``max_steps``
    steps or ``time_budget_s`` seconds, whichever comes first: 600 steps, evaluations
    included, took 25-28 s of CPU time on one thread of the project's 2-core machine, so on a
    quiet machine every run ends at the same step and repeats exactly; on a busy one the
    budget cuts it short."""

    time_budget_s: float = 30.0
    max_steps: int | None = 600
    eval_every: int = 25
    batch_size: int = 8
    learning_rate: float = 3e-3
    image_size: int = 64
    train_images: int = 1536
    eval_images: int = 64
    base_channels: int = 4
    rare_image_fraction: float = RARE_IMAGE_FRACTION
    rare_extent: tuple[float, float] = RARE_EXTENT
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "rare_extent", tuple(float(v) for v in self.rare_extent))

    def validate(self) -> None:
        if not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
            raise ValueError(f"time_budget_s must be a positive number of seconds, got {self.time_budget_s}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be None or >= 1, got {self.max_steps}")
        for name in ("eval_every", "batch_size", "train_images", "eval_images", "base_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.image_size < 32 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 and >= 32, got {self.image_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        check_imbalance_options(self.image_size, self.rare_image_fraction, self.rare_extent)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["rare_extent"] = list(self.rare_extent)
        return values


@dataclass
class LabRecord:
    """One point of the curves. ``seconds`` counts training and evaluation since the first
    step (``setup_seconds``, rendering the data and building the model, came before);
    ``train_loss`` is the mean training loss since the previous record (None at step 0); IoU
    and accuracy (recall, TP / (TP + FN)) are per class on the held-out batch."""

    step: int
    seconds: float
    setup_seconds: float
    train_loss: float | None
    per_class_iou: list[float]
    per_class_accuracy: list[float]
    miou: float
    done: bool = False
    stop_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@lru_cache(maxsize=4)
def _rendered_set(seed: int, num_images: int, size: int, rare_image_fraction: float, rare_extent: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """(images N x 3 x H x W, masks N x H x W), both uint8, of Imbalanced Shapes ``seed``;
    cached so that repeated runs skip the rendering."""
    images = np.empty((num_images, size, size, 3), dtype=np.uint8)
    masks = np.empty((num_images, size, size), dtype=np.uint8)
    for index in range(num_images):
        images[index], masks[index], _ = render_imbalanced_shapes(seed, index, size, rare_image_fraction, rare_extent)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks)


def lab_data(settings: LabSettings) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The training set (seed ``settings.seed``) and the held-out batch (seed
    ``settings.seed + EVAL_SEED_OFFSET``, never trained on)."""
    common = (settings.image_size, float(settings.rare_image_fraction), settings.rare_extent)
    train = _rendered_set(settings.seed, settings.train_images, *common)
    held_out = _rendered_set(settings.seed + EVAL_SEED_OFFSET, settings.eval_images, *common)
    return train, held_out


def _check_loss(loss: str, gamma: float) -> None:
    if loss not in LAB_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; the loss lab offers {', '.join(LAB_LOSSES)}")
    if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= MAX_GAMMA):
        raise ValueError(f"gamma must be a number in [0, {MAX_GAMMA:g}], got {gamma!r}")


@lru_cache(maxsize=4)
def _training_statistics(settings: LabSettings) -> tuple[Tensor, Tensor]:
    return dataset_class_statistics([lab_data(settings)[0][1].long()], SHAPES.num_classes)


def _lab_loss(loss: str, gamma: float, statistics: tuple[Tensor, Tensor]) -> torch.nn.Module:
    counts, image_counts = statistics
    return build_loss(loss, SHAPES.num_classes, class_counts=counts, gamma=gamma, image_counts=image_counts)


def class_weights_used(
    loss: str, gamma: float = 2.0, masks: Tensor | np.ndarray | None = None, settings: LabSettings | None = None
) -> dict[str, Any]:
    """The per-class weights ``loss`` applies, read from the very loss module the lab trains
    with (1 for every class when unweighted), with its formula, each class's pixel share, its
    share of the loss while every pixel is equally wrong (as at the start:
    ``N_c w_c / sum_j N_j w_j``) and the weights' spread (max / min). ``masks`` (N x H x W
    class ids) default to the training masks of ``settings`` (default :class:`LabSettings`)."""
    _check_loss(loss, gamma)
    if masks is None:
        settings = settings or LabSettings()
        settings.validate()
        statistics = _training_statistics(settings)
    else:
        masks = (masks if isinstance(masks, Tensor) else torch.as_tensor(np.asarray(masks))).long()
        statistics = dataset_class_statistics([masks], SHAPES.num_classes)
    weight = getattr(_lab_loss(loss, gamma, statistics), "weight", None)
    weights = torch.ones(SHAPES.num_classes) if weight is None else weight.float()
    counts = statistics[0].double()
    weighted = counts * weights.double()
    return {
        "loss": loss,
        "label": LOSS_LABELS[loss],
        "formula": LOSS_FORMULAS[loss],
        "gamma": float(gamma) if loss in ("focal", "wfocal") else None,
        "class_names": list(SHAPES.class_names),
        "pixel_share": (counts / counts.sum()).tolist(),
        "weights": weights.tolist(),
        "loss_share": (weighted / weighted.sum()).tolist(),
        "spread": float(weights.max() / weights[weights > 0].min()),
    }


def lab_class_weights(gamma: float = 2.0, settings: LabSettings | None = None) -> list[dict[str, Any]]:
    """:func:`class_weights_used` for every loss of the lab, on the lab's training masks."""
    return [class_weights_used(loss, gamma, settings=settings) for loss in LAB_LOSSES]


def _evaluate(model: torch.nn.Module, images: Tensor, masks: Tensor) -> dict[str, Any]:
    model.eval()
    matrix = ConfusionMatrix(SHAPES.num_classes)
    with torch.inference_mode():
        for start in range(0, len(images), 32):
            batch = images[start : start + 32].float() / 255.0
            matrix.update(model(batch), masks[start : start + 32].long())
    model.train()
    metrics = matrix.compute()
    counts = metrics["confusion_matrix"]
    accuracy = [row[c] / sum(row) if sum(row) else float("nan") for c, row in enumerate(counts)]
    return {"per_class_iou": metrics["per_class_iou"], "per_class_accuracy": accuracy, "miou": metrics["miou"]}


def run_loss_lab(
    loss: str,
    gamma: float = 2.0,
    settings: LabSettings | None = None,
    threads: int = 1,
    should_stop: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[LabRecord]:
    """Train a plain-encoder U-Net (``settings.base_channels`` wide) on Imbalanced Shapes with
    ``loss`` (one of :data:`LAB_LOSSES`; ``gamma`` for the focal ones), yielding a
    :class:`LabRecord` at step 0, every ``settings.eval_every`` steps and at the end (that one
    has ``done=True`` and ``stop_reason`` 'time budget', 'max steps' or 'stopped').

    With the same settings and thread count, the records up to a given step are identical
    (only the times differ). The global torch RNG is left as it was; ``threads`` applies
    while the lab computes and the caller's thread count is back whenever a record is yielded.
    ``clock`` (seconds) times the run and its budget.
    """
    settings = settings or LabSettings()
    _check_loss(loss, gamma)
    settings.validate()
    if not isinstance(threads, int) or not 1 <= threads <= (os.cpu_count() or 1):
        raise ValueError(f"threads must be an integer in [1, {os.cpu_count() or 1}], got {threads!r}")
    if should_stop is not None and not callable(should_stop):
        raise ValueError("should_stop must be a callable returning True to stop, or None")
    if not callable(clock):
        raise ValueError("clock must be a callable returning seconds, such as time.perf_counter")
    return _lab_steps(loss, float(gamma), settings, threads, should_stop, clock)


def _lab_steps(
    loss: str, gamma: float, settings: LabSettings, threads: int, should_stop: Callable[[], bool] | None, clock: Callable[[], float]
) -> Iterator[LabRecord]:
    setup_start = clock()
    with torch_threads(threads):
        (train_images, train_masks), (eval_images, eval_masks) = lab_data(settings)
        criterion = _lab_loss(loss, gamma, _training_statistics(settings))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            model = create_model("unet", SHAPES.num_classes, encoder="plain", pretrained=False, base_channels=settings.base_channels)
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
        batches = torch.Generator().manual_seed(settings.seed)
        setup_seconds = clock() - setup_start
        train_start = clock()
        first = _evaluate(model, eval_images, eval_masks)
    yield LabRecord(step=0, seconds=clock() - train_start, setup_seconds=setup_seconds, train_loss=None, **first)

    step, losses, stop_reason = 0, [], None
    while stop_reason is None:
        with torch_threads(threads):
            while True:
                indices = torch.randint(len(train_images), (settings.batch_size,), generator=batches)
                images = train_images[indices].float() / 255.0
                value = criterion(model(images), train_masks[indices].long())
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                step += 1
                losses.append(value.item())
                if settings.max_steps is not None and step >= settings.max_steps:
                    stop_reason = "max steps"
                elif clock() - train_start >= settings.time_budget_s:
                    stop_reason = "time budget"
                elif should_stop is not None and should_stop():
                    stop_reason = "stopped"
                if stop_reason is not None or step % settings.eval_every == 0:
                    break
            metrics = _evaluate(model, eval_images, eval_masks)
        yield LabRecord(
            step=step,
            seconds=clock() - train_start,
            setup_seconds=setup_seconds,
            train_loss=float(np.mean(losses)),
            done=stop_reason is not None,
            stop_reason=stop_reason,
            **metrics,
        )
        losses = []


__all__ = ["LAB_LOSSES", "LOSS_FORMULAS", "LOSS_LABELS", "RARE_CLASS", "LabRecord", "LabSettings", "class_weights_used", "lab_class_weights", "lab_data", "run_loss_lab", "torch_threads"]
