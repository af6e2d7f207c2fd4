"""The recipe's loss levers: square-root median-frequency weights, CE + Lovász-Softmax
(Berman et al. 2018), OHEM options and the class-balanced warm-up."""

import pytest
import torch
import torch.nn.functional as F

from segmodels.losses import (
    BalancedWarmupCrossEntropyLoss,
    CrossEntropyLovaszLoss,
    OhemCrossEntropyLoss,
    build_loss,
    class_weights_median_frequency,
    lovasz_jaccard_gradient,
    lovasz_softmax,
)


def jaccard_set_loss(mispredicted: set[int], truth: torch.Tensor) -> float:
    """Delta_J of a set of mispredicted pixels: |M| / |{y* = c} | M| (0 for the empty set)."""
    members = set(torch.nonzero(truth).flatten().tolist()) | mispredicted
    return len(mispredicted) / len(members) if members else 0.0

def test_lovasz_gradient_is_the_lovasz_extension_of_the_jaccard_set_function():
    """Eq. 8-9 by brute force: g_i is the Jaccard loss of the first i sorted pixels minus that of the first i - 1."""
    generator = torch.Generator().manual_seed(0)
    truth = (torch.rand(9, generator=generator) < 0.4).float()
    errors = torch.rand(9, generator=generator)
    order = errors.argsort(descending=True)
    expected = [jaccard_set_loss(set(order[:i + 1].tolist()), truth) - jaccard_set_loss(set(order[:i].tolist()), truth) for i in range(9)]
    torch.testing.assert_close(lovasz_jaccard_gradient(truth[order]), torch.tensor(expected))

def test_lovasz_softmax_of_one_hot_predictions_is_one_minus_the_mean_iou_of_the_present_classes():
    """The extension is tight on {0, 1} errors: it equals the set function there."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (40,), generator=generator)
    predicted = torch.where(torch.rand(40, generator=generator) < 0.3, torch.randint(0, 4, (40,), generator=generator), labels)
    ious = [((labels == c) & (predicted == c)).sum() / ((labels == c) | (predicted == c)).sum() for c in range(3)]
    loss = lovasz_softmax(F.one_hot(predicted, 4).float(), labels)
    assert loss.item() == pytest.approx(1 - torch.stack(ious).mean().item())

def test_lovasz_softmax_lies_between_zero_and_one_and_is_zero_for_perfect_probabilities():
    labels = torch.tensor([0, 1, 1, 2])
    assert lovasz_softmax(F.one_hot(labels, 3).float(), labels).item() == 0.0
    for seed in range(5):
        probabilities = F.softmax(torch.randn(30, 3, generator=torch.Generator().manual_seed(seed)) * 3, dim=1)
        assert 0 < lovasz_softmax(probabilities, torch.arange(30) % 3).item() < 1

def test_ce_lovasz_adds_the_weighted_lovasz_term_to_cross_entropy_and_ignores_void():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 3, 5, generator=generator)
    target = torch.randint(0, 4, (2, 3, 5), generator=generator)
    target[0, 0] = 255
    valid = (target != 255).flatten()
    probabilities = F.softmax(logits, 1).movedim(1, -1).reshape(-1, 4)[valid]
    expected = F.cross_entropy(logits, target, ignore_index=255) + 0.5 * lovasz_softmax(probabilities, target.flatten()[valid])
    torch.testing.assert_close(CrossEntropyLovaszLoss(0.5, ignore_index=255)(logits, target), expected)

def test_square_root_median_frequency_weights():
    counts, image_counts = [6, 2, 1], [10, 4, 4]
    expected = class_weights_median_frequency(counts, image_counts).sqrt()
    torch.testing.assert_close(build_loss("smfb", 3, counts, image_counts=image_counts).weight, expected)
    assert expected[2] == pytest.approx(2 ** 0.5 * expected[1].item())

def test_balanced_warm_up_anneals_median_frequency_weights_to_plain_cross_entropy():
    loss = build_loss("mfb_warmup", 3, [6, 3, 1], options={"balanced_epochs": 4})
    assert isinstance(loss, BalancedWarmupCrossEntropyLoss)
    balanced = class_weights_median_frequency([6, 3, 1])
    for epoch, share in ((0, 1.0), (2, 0.5), (4, 0.0), (9, 0.0)):
        loss.start_epoch(epoch)
        torch.testing.assert_close(loss.weight, 1 + (balanced - 1) * share)
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target))

def test_ohem_options_reach_the_loss_and_unknown_options_are_named():
    loss = build_loss("ohem", 3, options={"threshold": 0.5, "min_kept_fraction": 0.25})
    assert isinstance(loss, OhemCrossEntropyLoss) and loss.min_kept_fraction == 0.25 and loss.loss_threshold == pytest.approx(-torch.log(torch.tensor(0.5)).item())
    with pytest.raises(ValueError, match="takes no option lovasz_weight; it accepts: threshold, min_kept_fraction"):
        build_loss("ohem", 3, options={"lovasz_weight": 1})
    with pytest.raises(ValueError, match="accepts: none"):
        build_loss("mfb", 3, [1, 2, 3], options={"threshold": 0.5})

@pytest.mark.parametrize("name", ["smfb", "ce_lovasz", "mfb_warmup"])
def test_new_losses_train_a_pixel_classifier(name):
    """A 1x1 convolution on coloured pixels: 30 Adam steps bring every new loss near the labels."""
    generator = torch.Generator().manual_seed(3)
    target = torch.randint(0, 3, (4, 6, 6), generator=generator)
    images = F.one_hot(target, 3).permute(0, 3, 1, 2).float() + 0.3 * torch.randn(4, 3, 6, 6, generator=generator)
    model = torch.nn.Conv2d(3, 3, 1)
    criterion = build_loss(name, 3, [60, 50, 34], options={"balanced_epochs": 2} if name == "mfb_warmup" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for step in range(30):
        if hasattr(criterion, "start_epoch"):
            criterion.start_epoch(step // 10)
        loss = criterion(model(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (model(images).argmax(1) == target).float().mean() > 0.9
