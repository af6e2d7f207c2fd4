"""segmodels.teach.feature_maps: the thumbnails crop the padding and colour the principal
components."""

from __future__ import annotations

import numpy as np
import torch

from segmodels.teach.feature_maps import principal_components, summarise


def test_thumbnails_ignore_the_padding():
    feature = torch.rand(1, 5, 6, 8, generator=torch.Generator().manual_seed(0))
    padded = feature.clone()
    padded[..., 4:, :] = 1000.0
    padded[..., :, 6:] = -1000.0
    cropped = summarise(feature[..., :4, :6], (4, 6), (8, 12))
    for with_padding, without in zip(summarise(padded, (4, 6), (8, 12)), cropped):
        np.testing.assert_array_equal(with_padding, without)


def test_pca_finds_the_direction_of_largest_variance():
    generator = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, -4.0, 0.0, 0.0]) / 5
    pixels = torch.randn(500, 1, generator=generator) * 10 * direction + torch.randn(500, 4, generator=generator) * 0.1
    first = principal_components(pixels)[:, 0]
    expected = (pixels - pixels.mean(0)) @ direction
    assert torch.corrcoef(torch.stack([first, expected]))[0, 1].abs() > 0.999
    assert principal_components(pixels[:, :2]).shape == (500, 3)  # fewer channels than colours: zero-padded
