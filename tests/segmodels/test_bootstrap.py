"""Bootstrap intervals over test images: the resampling, the paired difference, the verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segmodels.bootstrap import (
    BETTER,
    NOT_DISTINGUISHABLE,
    WORSE,
    Entrant,
    Interval,
    against_best,
    bootstrap,
    mean_iou,
    paired_difference,
    per_class_iou,
    resample_weights,
    resampled_matrices,
    verdict,
    widen,
)
from segmodels.metrics import confusion_matrix, miou


def random_per_image(num_images: int, num_classes: int, accuracy: float, seed: int) -> np.ndarray:
    """Per-image confusion matrices of a fake model that is right with probability ``accuracy``."""
    rng = np.random.default_rng(seed)
    matrices = np.zeros((num_images, num_classes, num_classes), dtype=np.int64)
    for i in range(num_images):
        target = rng.integers(0, num_classes, 400)
        wrong = rng.random(400) > accuracy
        pred = np.where(wrong, rng.integers(0, num_classes, 400), target)
        np.add.at(matrices[i], (target, pred), 1)
    return matrices


def test_mean_iou_agrees_with_metrics_miou() -> None:
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 5, (30, 40)))
    pred = torch.from_numpy(rng.integers(0, 4, (30, 40)))  # class 4 never predicted
    matrix = confusion_matrix(pred, target, 5).numpy()
    assert math.isclose(float(mean_iou(matrix)), miou(pred, target, 5), rel_tol=1e-12)
    np.testing.assert_allclose(per_class_iou(matrix)[4], 0.0)
    absent = np.zeros((3, 3), dtype=np.int64)
    absent[0, 0], absent[1, 1] = 5, 5
    assert np.isnan(per_class_iou(absent)[2]) and mean_iou(absent) == 1.0


def test_resampling_draws_every_image_n_times_in_all() -> None:
    weights = resample_weights(7, resamples=50, seed=3)
    assert weights.shape == (50, 7) and np.all(weights.sum(1) == 7)
    np.testing.assert_array_equal(weights, resample_weights(7, resamples=50, seed=3))
    assert not np.array_equal(weights, resample_weights(7, resamples=50, seed=4))
    per_image = random_per_image(7, 3, 0.8, 0)
    np.testing.assert_array_equal(resampled_matrices(per_image, np.ones((1, 7)))[0], per_image.sum(0))
    with pytest.raises(ValueError, match="at least one image"):
        resample_weights(0)
    with pytest.raises(ValueError, match="N x K x K"):
        resampled_matrices(per_image[0], weights)


def test_interval_brackets_the_estimate_and_narrows_with_more_images() -> None:
    small = bootstrap(random_per_image(20, 4, 0.7, 1), resamples=500)
    large = bootstrap(random_per_image(320, 4, 0.7, 1), resamples=500)
    for result in (small, large):
        assert result.miou.low <= result.miou.estimate <= result.miou.high
        assert all(c.low <= c.estimate <= c.high for c in result.per_class_iou)
    assert large.miou.half_width < small.miou.half_width / 2


def test_absent_class_has_no_interval() -> None:
    per_image = random_per_image(10, 3, 0.9, 2)
    per_image[:, 2, :] = 0
    per_image[:, :, 2] = 0
    result = bootstrap(per_image, resamples=100)
    assert math.isnan(result.per_class_iou[2].estimate) and math.isnan(result.per_class_iou[2].low)
    assert not math.isnan(result.miou.low)


def test_paired_difference_and_verdict() -> None:
    weak = random_per_image(60, 4, 0.6, 5)
    strong = random_per_image(60, 4, 0.9, 6)
    same = paired_difference(weak, weak, resamples=200)
    assert (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0) and verdict(same) == NOT_DISTINGUISHABLE
    better = paired_difference(strong, weak, resamples=200)
    assert better.low > 0 and verdict(better) == BETTER
    assert verdict(paired_difference(weak, strong, resamples=200)) == WORSE
    close = paired_difference(random_per_image(60, 4, 0.70, 7), random_per_image(60, 4, 0.705, 8), resamples=200)
    assert verdict(close) == NOT_DISTINGUISHABLE
    with pytest.raises(ValueError, match="same images"):
        paired_difference(weak, weak[:-1])


def test_each_model_against_the_best_uses_the_best_records_resampling() -> None:
    weak, strong = random_per_image(60, 4, 0.6, 5), random_per_image(60, 4, 0.9, 6)
    weak_miou, strong_miou = (float(mean_iou(m.sum(0))) for m in (weak, strong))
    entrants = [Entrant(weak_miou, weak, resamples=50, seed=3), Entrant(strong_miou, strong, resamples=120, seed=1),
                Entrant(strong_miou, strong.copy(), resamples=80, seed=2),  # ties with the best: the first of equals is the best
                Entrant(0.5, None, "its per-image file is missing"), Entrant(0.4, weak[:30])]
    standings = against_best(entrants)
    assert [s.best for s in standings] == [False, True, False, False, False]
    assert standings[0].difference == paired_difference(weak, strong, 120, 1) and standings[0].verdict == WORSE
    assert standings[2].difference == paired_difference(strong, strong, 120, 1) and standings[2].verdict == NOT_DISTINGUISHABLE
    assert standings[3].problem == "its per-image file is missing" and standings[3].difference is None and standings[3].verdict is None
    assert standings[4].problem == "30 test images against 60"
    unreadable_best = against_best([Entrant(0.9, None, "checksum differs"), Entrant(0.6, weak)])
    assert unreadable_best[0].best and [s.problem for s in unreadable_best] == ["checksum differs"] * 2
    assert against_best([]) == []


def test_pairing_removes_the_difficulty_shared_by_both_models() -> None:
    """Images hard for both models move both scores together: the paired interval of the
    difference is much narrower than the two separate intervals suggest."""
    rng = np.random.default_rng(9)
    a = np.zeros((80, 2, 2), dtype=np.int64)
    for i in range(80):
        difficulty = rng.uniform(0.5, 1.0)
        a[i] = [[int(1000 * difficulty), int(1000 * (1 - difficulty))], [int(200 * (1 - difficulty)), int(800 * difficulty)]]
    b = a.copy()
    b[:, 0, 0] += 10
    b[:, 0, 1] -= 10
    paired = paired_difference(b, a, resamples=300)
    separate = bootstrap(a, resamples=300).miou.half_width + bootstrap(b, resamples=300).miou.half_width
    assert paired.low > 0 and paired.half_width < separate / 5


def test_widen_adds_seed_noise_in_quadrature() -> None:
    interval = Interval(0.01, 0.004, 0.02)
    assert widen(interval, None) == interval
    wider = widen(interval, 0.003)
    extra = 1.959964 * math.sqrt(2) * 0.003
    assert math.isclose(wider.low, 0.01 - math.hypot(0.006, extra)) and math.isclose(wider.high, 0.01 + math.hypot(0.01, extra))
    assert verdict(interval) == BETTER and verdict(wider) == NOT_DISTINGUISHABLE
    assert Interval.from_dict(wider.as_dict()) == wider
