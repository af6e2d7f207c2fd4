from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segmodels.losses import (
    LOSS_NAMES,
    FocalLoss,
    WeightedCrossEntropyLoss,
    build_loss,
    class_weights_inverse_share,
    class_weights_median_frequency,
    cross_entropy_curve,
    dataset_class_statistics,
    dataset_pixel_counts,
    focal_curve,
    pixel_counts,
)

IGNORE = 255


def _batch(seed: int = 0, num_classes: int = 4, ignore_fraction: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, num_classes, 5, 6, generator=generator) * 3
    target = torch.randint(0, num_classes, (2, 5, 6), generator=generator)
    target[torch.rand(2, 5, 6, generator=generator) < ignore_fraction] = IGNORE
    return logits, target


@pytest.mark.parametrize("weight", [None, torch.tensor([0.4, 0.7, 0.9, 2.5])])
def test_focal_gamma_zero_equals_cross_entropy(weight: torch.Tensor | None) -> None:
    logits, target = _batch()
    assert (target == IGNORE).any()
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
    focal = FocalLoss(gamma=0.0, weight=weight, ignore_index=IGNORE)(logits, target)
    wce = WeightedCrossEntropyLoss(weight=weight, ignore_index=IGNORE)(logits, target)
    torch.testing.assert_close(focal, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(wce, expected, rtol=1e-6, atol=1e-6)


def test_focal_sum_and_none_reductions() -> None:
    logits, target = _batch(seed=1)
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    none = FocalLoss(gamma=0.0, weight=weight, ignore_index=IGNORE, reduction="none")(logits, target)
    expected = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none")
    torch.testing.assert_close(none, expected)
    total = FocalLoss(gamma=2.0, ignore_index=IGNORE, reduction="sum")(logits, target)
    per_pixel = FocalLoss(gamma=2.0, ignore_index=IGNORE, reduction="none")(logits, target)
    torch.testing.assert_close(total, per_pixel.sum())


def test_focal_matches_formula() -> None:
    logits, target = _batch(seed=2)
    weight = torch.tensor([0.4, 0.7, 0.9, 2.5])
    gamma = 1.5
    probs = logits.softmax(1)
    valid = target != IGNORE
    safe = torch.where(valid, target, 0)
    pt = probs.gather(1, safe.unsqueeze(1)).squeeze(1)
    w = weight[safe]
    expected = (-(w * (1 - pt) ** gamma * pt.log())[valid]).sum() / w[valid].sum()
    loss = FocalLoss(gamma=gamma, weight=weight, ignore_index=IGNORE)(logits, target)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def _two_class_logits(p_true: float) -> torch.Tensor:
    margin = math.log(p_true / (1 - p_true))
    return torch.tensor([margin, 0.0]).view(1, 2, 1, 1)


def test_focal_down_weights_easy_pixels() -> None:
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    easy, hard = _two_class_logits(0.95), _two_class_logits(0.2)
    ce = WeightedCrossEntropyLoss()
    losses = [FocalLoss(gamma=g)(easy, target).item() for g in (0.0, 1.0, 2.0, 5.0)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    for gamma in (1.0, 2.0, 5.0):
        focal = FocalLoss(gamma=gamma)
        easy_ratio = (focal(easy, target) / ce(easy, target)).item()
        hard_ratio = (focal(hard, target) / ce(hard, target)).item()
        assert hard_ratio > easy_ratio
        assert easy_ratio == pytest.approx(0.05**gamma, rel=1e-4)
        assert hard_ratio == pytest.approx(0.8**gamma, rel=1e-4)


def test_ignored_pixels_do_not_change_loss() -> None:
    logits, target = _batch(seed=3, ignore_fraction=0.3)
    changed = logits.clone()
    changed[(target == IGNORE).unsqueeze(1).expand_as(logits)] = 1e4
    for loss in (
        FocalLoss(gamma=2.0, weight=torch.tensor([0.4, 0.7, 0.9, 2.5]), ignore_index=IGNORE),
        WeightedCrossEntropyLoss(ignore_index=IGNORE),
    ):
        torch.testing.assert_close(loss(changed, target), loss(logits, target))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_ignored_gives_zero_with_grad(name: str) -> None:
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), -1)
    loss = build_loss(name, 3, class_counts=[6, 3, 1], ignore_index=-1)(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_flow(name: str) -> None:
    logits, target = _batch(seed=4)
    logits.requires_grad_(True)
    loss = build_loss(name, 4, class_counts=[10, 5, 3, 2], ignore_index=IGNORE)(logits, target)
    loss.backward()
    grad = logits.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    ignored = (target == IGNORE).unsqueeze(1).expand_as(grad)
    assert torch.equal(grad[ignored], torch.zeros_like(grad[ignored]))


def test_focal_gradient_finite_when_saturated() -> None:
    logits = torch.tensor([[200.0, 0.0], [0.0, 200.0]]).T.reshape(1, 2, 1, 2).requires_grad_(True)
    target = torch.tensor([[[0, 1]]])
    for gamma in (0.0, 0.5, 2.0):
        loss = FocalLoss(gamma=gamma)(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_inverse_share_weights_hand_case() -> None:
    mask = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 1, 1, 2]])
    counts = pixel_counts(mask, 3)
    assert counts.tolist() == [6, 3, 1]
    torch.testing.assert_close(class_weights_inverse_share(counts), torch.tensor([0.4, 0.7, 0.9]))


def test_pixel_counts_ignores_and_validates() -> None:
    mask = np.array([[0, 255, 2], [2, 255, 1]], dtype=np.uint8)
    assert pixel_counts(mask, 3, ignore_index=255).tolist() == [1, 1, 2]
    with pytest.raises(ValueError, match="mask values"):
        pixel_counts(mask, 3)


def test_dataset_counts_over_pairs_and_batches() -> None:
    first = torch.tensor([[0, 0], [1, 255]])
    second = torch.tensor([[2, 2], [2, 0]])
    pairs = [(torch.zeros(3, 2, 2), first), (torch.zeros(3, 2, 2), second)]
    assert dataset_pixel_counts(pairs, 3, ignore_index=255).tolist() == [3, 1, 3]
    batched = [torch.stack([first, second])]
    counts, image_counts = dataset_class_statistics(batched, 3, ignore_index=255)
    assert counts.tolist() == [3, 1, 3]
    assert image_counts.tolist() == [3 + 4, 3, 4]


def test_median_frequency_hand_case() -> None:
    torch.testing.assert_close(class_weights_median_frequency([6, 3, 1]), torch.tensor([0.5, 1.0, 3.0]))
    # freq = [6/10, 2/4, 0, 1/4]; median of the present classes = 0.5
    weights = class_weights_median_frequency([6, 2, 0, 1], image_counts=[10, 4, 0, 4])
    torch.testing.assert_close(weights, torch.tensor([0.5 / 0.6, 1.0, 0.0, 2.0]))
    # even number of present classes: median of [0.1, 0.2, 0.3, 0.4] is 0.25
    weights = class_weights_median_frequency([1, 2, 3, 4])
    torch.testing.assert_close(weights, torch.tensor([2.5, 1.25, 0.25 / 0.3, 0.625]))


def test_build_loss_weights_and_errors() -> None:
    assert isinstance(build_loss("ce", 3), WeightedCrossEntropyLoss)
    focal = build_loss("focal", 3, gamma=1.0)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.0 and focal.weight is None
    torch.testing.assert_close(build_loss("wce", 3, class_counts=[6, 3, 1]).weight, torch.tensor([0.4, 0.7, 0.9]))
    torch.testing.assert_close(build_loss("wfocal", 3, class_counts=[6, 3, 1]).weight, torch.tensor([0.4, 0.7, 0.9]))
    torch.testing.assert_close(build_loss("mfb", 3, class_counts=[6, 3, 1]).weight, torch.tensor([0.5, 1.0, 3.0]))
    for name in ("wce", "mfb", "wfocal"):
        with pytest.raises(ValueError, match="class_counts"):
            build_loss(name, 3)
    with pytest.raises(ValueError, match="length 3"):
        build_loss("wce", 3, class_counts=[1, 2])
    with pytest.raises(ValueError, match="valid names: ce, wce, mfb, focal, wfocal"):
        build_loss("dice", 3)


def test_curves() -> None:
    p = np.array([0.1, 0.5, 0.9, 1.0])
    np.testing.assert_allclose(cross_entropy_curve(p), -np.log(p))
    np.testing.assert_allclose(focal_curve(p, 2.0), -((1 - p) ** 2) * np.log(p))
    np.testing.assert_allclose(focal_curve(p, 0.0), cross_entropy_curve(p))
    assert focal_curve(0.0, 2.0) == np.inf
