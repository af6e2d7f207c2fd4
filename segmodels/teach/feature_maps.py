"""Thumbnails of a feature map: the mean absolute activation over channels, and the first
three principal components of the channel vectors as red, green and blue (the same colour
means a similar feature vector), each contrast-stretched between two quantiles of the map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STRETCH_QUANTILES = (0.01, 0.99)  # thumbnails map these quantiles of a map to black and white


def thumbnail_size(image_size: tuple[int, int], side: int) -> tuple[int, int]:
    """(height, width) with the image's aspect ratio and the longest side ``side``."""
    height, width = image_size
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _stretch(values: torch.Tensor) -> torch.Tensor:
    """Map the :data:`STRETCH_QUANTILES` of ``values`` to 0 and 1 (0.5 where it is constant)."""
    low, high = torch.quantile(values.flatten(), torch.tensor(STRETCH_QUANTILES, device=values.device))
    spread = high - low
    if spread <= 1e-6 * max(1.0, high.abs().item()):
        return torch.full_like(values, 0.5)
    return ((values - low) / spread).clamp_(0, 1)


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    return values.mul(255).round_().to(torch.uint8).cpu().numpy()


def principal_components(pixels: torch.Tensor, count: int = 3) -> torch.Tensor:
    """Projections (P x count) of P centred channel vectors on their first ``count``
    principal components (eigenvectors of the C x C covariance, largest eigenvalue first;
    zero columns when C < count). Each component's sign makes its largest loading positive."""
    centred = pixels - pixels.mean(0, keepdim=True)
    covariance = centred.T @ centred / max(1, centred.shape[0] - 1)
    _, vectors = torch.linalg.eigh(covariance)
    top = vectors[:, -count:].flip(1)
    signs = torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))
    projections = centred @ (top * torch.where(signs == 0, 1.0, signs))
    return F.pad(projections, (0, count - projections.shape[1]))


def summarise(feature: torch.Tensor, valid: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of a 1 x C x h x w feature map: its valid top-left ``valid`` region (the
    rest is padding) resampled to ``size`` by area averaging (repetition when enlarging),
    as (mean |activation|, PCA colour); see :class:`FeatureMap`."""
    region = feature[0, :, : valid[0], : valid[1]].float()
    activation = F.adaptive_avg_pool2d(region.abs().mean(0, keepdim=True), size)[0]
    pooled = F.adaptive_avg_pool2d(region, size)
    components = principal_components(pooled.flatten(1).T)
    colour = torch.stack([_stretch(c) for c in components.T], dim=-1).reshape(*size, 3)
    return _to_uint8(_stretch(activation)), _to_uint8(colour)


__all__ = ["STRETCH_QUANTILES", "principal_components", "summarise", "thumbnail_size"]
