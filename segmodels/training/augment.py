"""Training augmentation on whole batches on the frames' device (GPU or CPU), as
``segmodels.data.train_transform`` does per image on the CPU: photometric changes, random
scale, random crop (padding black, labels void), horizontal flip; one ``grid_sample`` per
batch, bilinear for images and nearest for labels. Random draws come from a CPU generator,
so a seed gives the same stream on every device.

Photometric levels (the recipe's ``photometric``):

* ``none``;
* ``jitter``: torchvision's ColorJitter(0.3, 0.3, 0.3, 0.03), the fair set's;
* ``strong``: ColorJitter(0.4, 0.4, 0.4, 0.08), then a gamma ``x^g`` with ``log g`` uniform
  in ``[log 0.7, log 1.5]`` and Gaussian noise of a standard deviation uniform in
  ``[0, 0.03]``: the camera's exposure curve and sensor noise vary between CamVid's drives
  (0001TP is filmed at dusk), not only its colour balance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.03}
STRONG_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.08}
GAMMA_RANGE = (0.7, 1.5)
NOISE_MAX = 0.03
LUMA = (0.299, 0.587, 0.114)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)


def uniform(low: float, high: float, count: int, generator: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)


def blend(image: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``factor * image + (1 - factor) * other`` clamped to [0, 1], one factor per image."""
    factor = factor.view(-1, 1, 1, 1)
    return (factor * image + (1 - factor) * other).clamp_(0, 1)


def hue_rotations(shifts: Tensor) -> Tensor:
    """B x 3 x 3 RGB matrices that rotate the chroma plane (I, Q) of YIQ by ``2 pi shift``
    and keep the luma Y: a linear hue shift."""
    angle = 2 * math.pi * shifts
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(shifts), 3, 3, dtype=torch.float64)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(RGB_TO_YIQ) @ rotation @ RGB_TO_YIQ


def color_jitter(images: Tensor, generator: torch.Generator, strength: dict[str, float] = JITTER) -> Tensor:
    """torchvision's ColorJitter per image of a float batch in [0, 1]: brightness scales,
    contrast blends with the image's mean luma, saturation with the pixel's luma, hue rotates
    the chroma (in this order)."""
    count, device = len(images), images.device
    luma_weights = torch.tensor(LUMA, device=device).view(1, 3, 1, 1)
    factors = {name: uniform(1 - strength[name], 1 + strength[name], count, generator).to(device, torch.float32) for name in ("brightness", "contrast", "saturation")}
    images = (images * factors["brightness"].view(-1, 1, 1, 1)).clamp_(0, 1)
    mean_luma = (images * luma_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    images = blend(images, mean_luma, factors["contrast"])
    images = blend(images, (images * luma_weights).sum(1, keepdim=True), factors["saturation"])
    rotations = hue_rotations(uniform(-strength["hue"], strength["hue"], count, generator)).to(device, torch.float32)
    return torch.einsum("bij,bjhw->bihw", rotations, images).clamp_(0, 1)


def gamma_and_noise(images: Tensor, generator: torch.Generator) -> Tensor:
    """Per image: ``x^g`` with ``log g`` uniform in ``log GAMMA_RANGE``, plus Gaussian noise of
    a standard deviation uniform in ``[0, NOISE_MAX]``, clamped to [0, 1]."""
    count, device = len(images), images.device
    gammas = uniform(*(math.log(g) for g in GAMMA_RANGE), count, generator).exp().to(device, torch.float32)
    sigmas = uniform(0.0, NOISE_MAX, count, generator).to(device, torch.float32)
    noise = torch.randn(images.shape, generator=generator).to(device)
    return (images.clamp_min(1e-6).pow(gammas.view(-1, 1, 1, 1)) + sigmas.view(-1, 1, 1, 1) * noise).clamp_(0, 1)


def photometric(images: Tensor, level: str, generator: torch.Generator) -> Tensor:
    """The recipe's photometric augmentation ``level`` (module docstring) of a float batch."""
    if level == "none":
        return images
    if level == "jitter":
        return color_jitter(images, generator)
    if level == "strong":
        return gamma_and_noise(color_jitter(images, generator, STRONG_JITTER), generator)
    raise ValueError(f"photometric must be none, jitter or strong, got {level!r}")


def scale_crop_flip(images: Tensor, masks: Tensor, crop: tuple[int, int], scale_range: tuple[float, float], generator: torch.Generator, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per image: resize by ``s`` drawn from ``scale_range`` (to round(H s) x round(W s)), crop
    ``crop`` at a uniform position (a smaller image lands at a uniform position in the
    crop, padded black / ``ignore_index``), flip horizontally with probability 1/2.

    Crop pixel (i, j) has its centre at ``top + i + 1/2`` rows of the resized image, which is
    grid_sample's normalised coordinate ``2 (top + i + 1/2) / round(H s) - 1`` of the source
    (``align_corners=False``): bilinear for the image, nearest for the labels, so a label
    map only ever holds ids of its source or ``ignore_index``. No antialiasing: scales far
    below 1 alias (the CPU pipeline antialiases)."""
    count, _, height, width = images.shape
    crop_h, crop_w = crop
    device = images.device
    scale = uniform(*scale_range, count, generator)
    scaled_h, scaled_w = (height * scale).round().clamp_min(1), (width * scale).round().clamp_min(1)

    def offsets(scaled: Tensor, size: int) -> Tensor:
        slack = scaled - size
        return torch.floor(torch.rand(count, generator=generator, dtype=torch.float64) * (slack.abs() + 1)) + slack.clamp(max=0)

    top, left = offsets(scaled_h, crop_h), offsets(scaled_w, crop_w)
    flip = torch.rand(count, generator=generator) < 0.5
    rows = top[:, None] + torch.arange(crop_h, dtype=torch.float64) + 0.5
    columns = torch.arange(crop_w, dtype=torch.float64).expand(count, crop_w)
    columns = left[:, None] + torch.where(flip[:, None], crop_w - 1 - columns, columns) + 0.5
    grid_y = (2 * rows / scaled_h[:, None] - 1)[:, :, None].expand(count, crop_h, crop_w)
    grid_x = (2 * columns / scaled_w[:, None] - 1)[:, None, :].expand(count, crop_h, crop_w)
    grid = torch.stack((grid_x, grid_y), dim=-1).to(device, torch.float32)
    inside = ((grid.abs() < 1).all(-1)).unsqueeze(1)
    sampled = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = F.grid_sample(masks.unsqueeze(1).float(), grid, mode="nearest", padding_mode="border", align_corners=False)
    sampled = torch.where(inside, sampled, torch.zeros_like(sampled))
    labels = torch.where(inside, labels, torch.full_like(labels, ignore_index))
    return sampled, labels.squeeze(1).long()


class AugmentedStream:
    """The training batches of one seed: a new permutation of the frames each epoch (the
    last incomplete batch dropped), each batch changed photometrically, scaled, cropped and
    flipped on the frames' device."""

    def __init__(self, images: Tensor, masks: Tensor, seed: int, batch_size: int, crop: tuple[int, int], scale_range: tuple[float, float], ignore_index: int,
                 photometric_level: str = "jitter"):
        if len(images) < batch_size:
            raise ValueError(f"batch size {batch_size} is larger than the {len(images)} training frames")
        if photometric_level not in ("none", "jitter", "strong"):
            raise ValueError(f"photometric must be none, jitter or strong, got {photometric_level!r}")
        self.images, self.masks = images, masks
        self.batch_size, self.crop, self.scale_range, self.ignore_index = batch_size, crop, scale_range, ignore_index
        self.photometric_level = photometric_level
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def epoch(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(self.images), generator=self.generator)
        for step in range(self.steps_per_epoch):
            index = order[step * self.batch_size:(step + 1) * self.batch_size].to(self.images.device)
            images = photometric(self.images[index].float().div_(255), self.photometric_level, self.generator)
            yield scale_crop_flip(images, self.masks[index], self.crop, self.scale_range, self.generator, self.ignore_index)
