"""The numbers the teaching text quotes, computed from the library so none is typed by hand.

Receptive field (Araujo, Norris & Sim, Distill 2019; :mod:`segmodels.receptive_field`):
a k x k convolution with dilation ``r`` spans ``k_eff = r (k - 1) + 1`` pixels and grows the
receptive field by ``(k_eff - 1) * jump``, where ``jump`` is the product of all earlier strides.
So n stacked 3x3 stride-1 convolutions see ``2n + 1`` pixels (two see 5 x 5, three 7 x 7), and
after a stride-2 layer every later 3x3 convolution adds 4 pixels instead of 2.

Class weights from per-class pixel counts ``N_c`` (:mod:`segmodels.losses`): the inverse share
``(N - N_c) / N`` and median-frequency balancing (Eigen & Fergus, ICCV 2015)
``median(freq) / freq_c`` with ``freq_c = N_c / P_c``. On CamVid's 367 training masks the
first spreads about 1.49x from road to bicyclist, the second about 59x.

mIoU of a dataset is computed from one confusion matrix summed over all pixels of the split,
which is not the mean of the images' mIoUs: an image averages only the classes it shows or
predicts, so images without an object score perfectly without it, while the dataset's matrix
keeps every missed pixel in that class's IoU (:func:`miou_worked_example`: the images average
29/36, the dataset scores 17/36).

DeepLabV3+ ASPP rates (Chen et al., DeepLabV3 Sec. 3.3, kept by DeepLabV3+): 6, 12, 18 at
output stride 16, doubled at output stride 8, read from :mod:`segmodels.decoders.deeplabv3p`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.camvid import CamVidDataset
from ..data.info import CAMVID
from ..decoders.deeplabv3p import ASPP_RATES
from ..losses import class_weights_inverse_share, class_weights_median_frequency, dataset_class_statistics
from ..metrics import ConfusionMatrix
from ..receptive_field import Field


def positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def stacked_conv_receptive_field(num_layers: int, kernel: int = 3) -> int:
    """Receptive field of ``num_layers`` stacked k x k stride-1 convolutions: ``1 + n (k - 1)``,
    i.e. ``2n + 1`` for 3 x 3."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
        raise ValueError(f"num_layers must be a non-negative integer, got {num_layers!r}")
    return 1 + num_layers * (positive_int("kernel", kernel) - 1)


def dilated_kernel_extent(kernel: int, rate: int) -> int:
    """Pixels spanned by a k x k kernel with dilation ``rate``: ``rate (k - 1) + 1``."""
    return positive_int("rate", rate) * (positive_int("kernel", kernel) - 1) + 1


@dataclass(frozen=True)
class ConvLayer:
    """One square convolution of a receptive-field example."""

    kernel: int = 3
    stride: int = 1
    dilation: int = 1

    def __post_init__(self) -> None:
        for name in ("kernel", "stride", "dilation"):
            positive_int(name, getattr(self, name))


RECEPTIVE_FIELD_EXAMPLE = (ConvLayer(), ConvLayer(), ConvLayer(stride=2), ConvLayer(), ConvLayer())


def receptive_field_steps(layers: Iterable[ConvLayer]) -> list[dict[str, Any]]:
    """Layer by layer: the kernel's extent, the input ``jump`` it steps over, how much it
    grows the receptive field (``(extent - 1) * jump``) and the receptive field and jump after
    it, computed with :class:`segmodels.receptive_field.Field` (padding does not change them)."""
    field = Field()
    steps = []
    for index, layer in enumerate(layers, start=1):
        if not isinstance(layer, ConvLayer):
            raise ValueError(f"layer {index} must be a ConvLayer, got {type(layer).__name__}")
        extent = dilated_kernel_extent(layer.kernel, layer.dilation)
        after = field.through(layer.kernel, layer.stride, layer.dilation, padding=(extent - 1) // 2)
        steps.append({
            "layer": index,
            "kernel": layer.kernel,
            "stride": layer.stride,
            "dilation": layer.dilation,
            "extent": extent,
            "jump_in": int(field.jump),
            "growth": int(after.size - field.size),
            "receptive_field": int(after.size),
            "jump_out": int(after.jump),
        })
        field = after
    return steps


def class_weight_schemes(
    masks: Iterable[Any], num_classes: int, ignore_index: int | None = None, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Both weighting schemes for a set of masks (arrays or tensors of class ids, one image or a
    batch each), with each class's pixel share and each scheme's spread: the ratio of the
    largest to the smallest weight over the classes that occur."""
    positive_int("num_classes", num_classes)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    counts, image_counts = dataset_class_statistics(masks, num_classes, -100 if ignore_index is None else ignore_index)
    if counts.sum() == 0:
        raise ValueError("the masks hold no labelled pixel")
    present = counts > 0
    inverse_share = class_weights_inverse_share(counts)
    median_frequency = class_weights_median_frequency(counts, image_counts)

    def spread(weights: torch.Tensor) -> float:
        return float(weights[present].max() / weights[present].min())

    return {
        "class_names": list(class_names) if class_names is not None else [str(c) for c in range(num_classes)],
        "pixel_counts": counts.tolist(),
        "pixel_share": (counts.double() / counts.sum()).tolist(),
        "inverse_share": inverse_share.tolist(),
        "median_frequency": median_frequency.tolist(),
        "inverse_share_spread": spread(inverse_share),
        "median_frequency_spread": spread(median_frequency),
    }


def camvid_class_weight_schemes(root: str | Path, split: str = "train") -> dict[str, Any]:
    """:func:`class_weight_schemes` of a CamVid split's label maps (void ignored)."""
    dataset = CamVidDataset(root, split)
    masks = (np.array(Image.open(path)) for path in dataset.mask_files)
    return class_weight_schemes(masks, CAMVID.num_classes, CAMVID.ignore_index, CAMVID.class_names)


MIOU_EXAMPLE_CLASSES = ("background", "object")
MIOU_EXAMPLE_TARGETS = (
    ((0, 0, 0), (0, 0, 1)),
    ((0, 0, 0), (0, 0, 0)),
    ((0, 0, 0), (0, 0, 0)),
)
MIOU_EXAMPLE_PREDICTIONS = (
    ((0, 0, 0), (0, 0, 0)),
    ((0, 0, 0), (0, 0, 0)),
    ((0, 0, 0), (0, 0, 0)),
)


def _exact_ious(matrix: torch.Tensor) -> list[Fraction | None]:
    tp = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - tp
    return [Fraction(int(t), int(u)) if u > 0 else None for t, u in zip(tp, union)]


def _mean(values: list[Fraction | None]) -> Fraction:
    present = [v for v in values if v is not None]
    return sum(present, Fraction(0)) / len(present)


def miou_image_vs_dataset(
    predictions: Sequence[Any], targets: Sequence[Any], num_classes: int, ignore_index: int | None = None
) -> dict[str, Any]:
    """Per-image mIoU and their mean, against the dataset mIoU of one confusion matrix over all
    pixels (:class:`segmodels.metrics.ConfusionMatrix`), as floats and exact fractions. Each
    mIoU averages the classes present in the ground truth or the prediction."""
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need as many predictions as targets (at least one), got {len(predictions)} and {len(targets)}")
    dataset = ConfusionMatrix(num_classes, ignore_index)
    images, image_mious = [], []
    for prediction, target in zip(predictions, targets):
        matrix = ConfusionMatrix(num_classes, ignore_index)
        matrix.update(torch.as_tensor(np.asarray(prediction)), torch.as_tensor(np.asarray(target)))
        dataset.merge(matrix)
        exact = _exact_ious(matrix.matrix)
        image_mious.append(_mean(exact))
        metrics = matrix.compute()
        images.append({
            "per_class_iou": metrics["per_class_iou"],
            "miou": metrics["miou"],
            "per_class_iou_exact": [None if v is None else str(v) for v in exact],
            "miou_exact": str(image_mious[-1]),
        })
    mean_of_images = sum(image_mious, Fraction(0)) / len(image_mious)
    dataset_exact = _exact_ious(dataset.matrix)
    metrics = dataset.compute()
    return {
        "images": images,
        "mean_of_image_mious": float(np.mean([image["miou"] for image in images])),
        "mean_of_image_mious_exact": str(mean_of_images),
        "dataset_per_class_iou": metrics["per_class_iou"],
        "dataset_per_class_iou_exact": [None if v is None else str(v) for v in dataset_exact],
        "dataset_miou": metrics["miou"],
        "dataset_miou_exact": str(_mean(dataset_exact)),
        "confusion_matrix": metrics["confusion_matrix"],
    }


def miou_worked_example() -> dict[str, Any]:
    """:func:`miou_image_vs_dataset` on three 2 x 3 masks: one object pixel missed in the first
    image, two empty images predicted perfectly. The images' mean is 29/36 (0.81): the empty
    images score 1 because the object class is absent from them. The dataset's mIoU is 17/36
    (0.47): over the whole set the object class exists and its IoU is 0."""
    result = miou_image_vs_dataset(MIOU_EXAMPLE_PREDICTIONS, MIOU_EXAMPLE_TARGETS, len(MIOU_EXAMPLE_CLASSES))
    return {
        "class_names": list(MIOU_EXAMPLE_CLASSES),
        "targets": [list(map(list, t)) for t in MIOU_EXAMPLE_TARGETS],
        "predictions": [list(map(list, p)) for p in MIOU_EXAMPLE_PREDICTIONS],
        **result,
    }


def unet_valid_output_size(input_size: int, levels: int = 4, convs_per_stage: int = 2) -> int:
    """Output side of the U-Net paper's network with *valid* 3x3 convolutions (Ronneberger et
    al. 2015, Fig. 1): each convolution trims 2 pixels, each 2x2 max-pool halves, each 2x2
    up-convolution doubles; 572 -> 388. Raises ValueError when a pooling would split a pixel."""
    size = positive_int("input_size", input_size)
    for _ in range(levels):
        size -= 2 * convs_per_stage
        if size <= 0 or size % 2:
            raise ValueError(f"a {input_size} px input cannot go through {levels} valid poolings (odd or empty at {size} px)")
        size //= 2
    size -= 2 * convs_per_stage
    for _ in range(levels):
        size = size * 2 - 2 * convs_per_stage
    if size <= 0:
        raise ValueError(f"a {input_size} px input is too small for valid convolutions")
    return size


def aspp_rates_by_output_stride() -> dict[int, tuple[int, ...]]:
    """DeepLabV3+'s ASPP dilation rates per output stride, as the model builds them."""
    return {output_stride: tuple(rates) for output_stride, rates in sorted(ASPP_RATES.items(), reverse=True)}


def aspp_branch_extents(output_stride: int) -> list[dict[str, int]]:
    """For each 3 x 3 atrous ASPP branch: its rate, the feature pixels its kernel spans
    (``2 rate + 1``) and the distance in input pixels between its outermost taps
    (``2 rate * output_stride``)."""
    rates = aspp_rates_by_output_stride()
    if output_stride not in rates:
        raise ValueError(f"output_stride must be one of {', '.join(map(str, rates))}, got {output_stride!r}")
    return [
        {
            "rate": rate,
            "feature_pixels": dilated_kernel_extent(3, rate),
            "outer_taps_input_pixels": (dilated_kernel_extent(3, rate) - 1) * output_stride,
        }
        for rate in rates[output_stride]
    ]


__all__ = [
    "positive_int",
    "unet_valid_output_size",
    "RECEPTIVE_FIELD_EXAMPLE",
    "ConvLayer",
    "aspp_branch_extents",
    "aspp_rates_by_output_stride",
    "camvid_class_weight_schemes",
    "class_weight_schemes",
    "dilated_kernel_extent",
    "miou_image_vs_dataset",
    "miou_worked_example",
    "receptive_field_steps",
    "stacked_conv_receptive_field",
]
