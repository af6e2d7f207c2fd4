"""Joint image/mask transforms built on ``torchvision.transforms.v2``.

Images are resized with antialiasing, masks only with nearest-neighbour sampling, so a
transformed mask never holds a label value that was not in the input (apart from
``ignore_index`` in padding).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

ImageLike = Image.Image | np.ndarray | torch.Tensor
PairTransform = Callable[[ImageLike, ImageLike], tuple[torch.Tensor, torch.Tensor]]


def to_tv_pair(image: ImageLike, mask: ImageLike) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Wrap an image (PIL, H x W x 3 array or 3 x H x W tensor) and a mask (PIL, array or
    H x W tensor of ids) as ``tv_tensors``; the mask becomes int64 (palette PNGs give their indices)."""
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image.convert("RGB"))
    elif isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    if isinstance(mask, Image.Image):
        mask = np.array(mask)
    mask = torch.as_tensor(mask).to(torch.int64)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from image size {tuple(image.shape[-2:])}")
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


class RandomScale(v2.Transform):
    """Resize image (bilinear, antialiased) and mask (nearest-exact, pixel centres aligned with
    the image) by one factor drawn uniformly from ``scale_range``."""

    def __init__(self, scale_range: tuple[float, float]):
        super().__init__()
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = random.uniform(*self.scale_range)
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        mode = v2.InterpolationMode.NEAREST_EXACT if isinstance(inpt, tv_tensors.Mask) else v2.InterpolationMode.BILINEAR
        return self._call_kernel(F.resize, inpt, size=params["size"], interpolation=mode, antialias=True)


class PairPipeline:
    """Callable ``(image, mask) -> (float image in [0, 1], int64 mask)`` around a v2 pipeline."""

    def __init__(self, transforms: list[v2.Transform]):
        to_dtype = v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64}, scale=True)
        self.pipeline = v2.Compose([*transforms, to_dtype])

    def __call__(self, image: ImageLike, mask: ImageLike) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pipeline(*to_tv_pair(image, mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def train_transform(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    ignore_index: int = 255,
    hflip: bool = True,
    color_jitter: bool = True,
) -> PairPipeline:
    """Optional colour jitter (image only), random scale, random ``crop_size`` (H, W) crop
    padded with 0 / ``ignore_index`` and optional horizontal flip."""
    transforms: list[v2.Transform] = []
    if color_jitter:
        transforms.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03))
    transforms += [
        RandomScale(scale_range),
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
    ]
    if hflip:
        transforms.append(v2.RandomHorizontalFlip())
    return PairPipeline(transforms)


def eval_transform() -> PairPipeline:
    """Conversion only: float image in [0, 1] and int64 mask."""
    return PairPipeline([])
