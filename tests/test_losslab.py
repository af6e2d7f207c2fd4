"""Tests for Imbalanced Shapes (segmodels.data.shapes) and the loss lab (segmodels.losslab)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from segmodels.data.shapes import (
    RARE_CLASS,
    ImbalancedShapesDataset,
    render_imbalanced_shapes,
    render_shapes,
)

SIZE = 64
RARE_SHARE_BOUND = 0.01


def _digest(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_plain_shapes_unchanged() -> None:
    """Digests taken from render_shapes before Imbalanced Shapes was added (commit db183c4)."""
    at_128 = [a for seed in (0, 1) for i in range(8) for a in render_shapes(seed, i, 128)]
    at_64 = [a for i in range(8) for a in render_shapes(3, i, SIZE)]
    assert _digest(at_128) == "962ce31fc29c81dc77ef9d4cc7471f763f7ac243b18d488bb51432a9400d1c61"
    assert _digest(at_64) == "4057276532847c1e89212aba69fb828b69ae8fd371e9bd9c0db3b4c0e76120a9"


def test_shapes_that_filled_the_image_render() -> None:
    """These raised 'high - low < 0' when a scaled shape's placement range rounded below zero."""
    for index in (9096, 9452, 11040):
        render_shapes(0, index, SIZE)
    for index in (3461, 4944):
        render_imbalanced_shapes(0, index, SIZE)


@pytest.fixture(scope="module")
def imbalanced_masks() -> np.ndarray:
    return np.stack([render_imbalanced_shapes(0, i, SIZE)[1] for i in range(400)])


def test_imbalanced_rare_class_is_rare_and_small(imbalanced_masks) -> None:
    counts = np.bincount(imbalanced_masks.ravel(), minlength=4)
    shares = counts / counts.sum()
    assert 0 < shares[RARE_CLASS] < RARE_SHARE_BOUND
    assert all(shares[c] > 10 * shares[RARE_CLASS] for c in range(4) if c != RARE_CLASS)
    images_with_rare = (imbalanced_masks == RARE_CLASS).any(axis=(1, 2)).mean()
    assert 0.1 < images_with_rare < 0.4
    rare_areas = [(m == RARE_CLASS).sum() for m in imbalanced_masks if (m == RARE_CLASS).any()]
    common_areas = [(m == c).sum() for m in imbalanced_masks for c in (1, 3) if (m == c).any()]
    assert np.median(rare_areas) < 0.25 * np.median(common_areas)


def test_imbalanced_deterministic_and_distinct_from_shapes() -> None:
    first = render_imbalanced_shapes(2, 5, SIZE)
    render_imbalanced_shapes(2, 6, SIZE)
    again = ImbalancedShapesDataset(10, size=SIZE, seed=2).sample(5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], render_shapes(2, 5, SIZE)[0])
    image, mask = ImbalancedShapesDataset(10, size=SIZE, seed=2)[5]
    assert image.shape == (3, SIZE, SIZE) and torch.equal(mask, torch.from_numpy(first[1]).long())


def test_imbalanced_options() -> None:
    never = [render_imbalanced_shapes(0, i, SIZE, rare_image_fraction=0.0)[1] for i in range(30)]
    assert not any((m == RARE_CLASS).any() for m in never)
    always = [render_imbalanced_shapes(0, i, SIZE, rare_image_fraction=1.0)[1] for i in range(30)]
    assert sum((m == RARE_CLASS).any() for m in always) >= 25
    with pytest.raises(ValueError, match="rare_image_fraction"):
        render_imbalanced_shapes(0, 0, SIZE, rare_image_fraction=1.5)
    with pytest.raises(ValueError, match="rare_extent"):
        ImbalancedShapesDataset(4, size=SIZE, rare_extent=(12.0, 8.0))
    with pytest.raises(ValueError, match="non-negative"):
        render_imbalanced_shapes(-1, 0, SIZE)
