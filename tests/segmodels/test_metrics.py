from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segmodels.metrics import ConfusionMatrix, confusion_matrix, iou_error_map, iou_from_confusion, miou

TARGET = torch.tensor([[0, 0, 1], [1, 2, 2]])
PRED = torch.tensor([[0, 1, 1], [1, 2, 0]])


def _numpy_reference(pred: np.ndarray, target: np.ndarray, k: int, ignore: int | None) -> dict[str, object]:
    keep = np.ones(target.shape, bool) if ignore is None else target != ignore
    matrix = np.zeros((k, k), np.int64)
    np.add.at(matrix, (target[keep], pred[keep]), 1)
    ious = []
    for c in range(k):
        tp = matrix[c, c]
        fp = matrix[:, c].sum() - tp
        fn = matrix[c, :].sum() - tp
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
    gt = matrix.sum(1)
    return {
        "matrix": matrix,
        "iou": ious,
        "miou": float(np.nanmean(ious)),
        "pixel_accuracy": np.trace(matrix) / matrix.sum(),
        "mean_class_accuracy": float(np.mean([matrix[c, c] / gt[c] for c in range(k) if gt[c]])),
    }


def test_hand_computed_confusion() -> None:
    assert confusion_matrix(PRED, TARGET, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    result = ConfusionMatrix(3)
    result.update(PRED, TARGET)
    stats = result.compute()
    assert stats["per_class_iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert stats["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert stats["pixel_accuracy"] == pytest.approx(4 / 6)
    assert stats["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert stats["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert stats["present"] == [True, True, True]


def test_perfect_prediction() -> None:
    assert miou(TARGET, TARGET, 3) == 1.0
    stats = ConfusionMatrix(5)
    stats.update(TARGET, TARGET)
    result = stats.compute()
    assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0 and result["mean_class_accuracy"] == 1.0


def test_ignore_index_skipped() -> None:
    target = torch.tensor([[0, 255, 1], [1, 255, 2]])
    pred = torch.tensor([[0, 2, 1], [1, 0, 2]])
    assert confusion_matrix(pred, target, 3, ignore_index=255).sum() == 4
    assert miou(pred, target, 3, ignore_index=255) == 1.0


def test_absent_classes_excluded() -> None:
    target = torch.tensor([[0, 0, 1], [1, 1, 3]])
    pred = torch.tensor([[0, 1, 1], [1, 1, 3]])
    matrix = ConfusionMatrix(4)
    matrix.update(pred, target)
    stats = matrix.compute()
    assert math.isnan(stats["per_class_iou"][2])
    assert stats["present"] == [True, True, False, True]
    assert stats["miou"] == pytest.approx((1 / 2 + 3 / 4 + 1) / 3)
    # a class only predicted is present and counts with IoU 0
    assert miou(torch.tensor([2, 0]), torch.tensor([0, 0]), 3) == pytest.approx(0.25)


def test_wrong_values_raise() -> None:
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(PRED, TARGET + 1, 3)
    with pytest.raises(ValueError, match="ignore_index=255"):
        ConfusionMatrix(3, ignore_index=255).update(PRED, torch.full_like(TARGET, 254))
    with pytest.raises(ValueError, match="target values"):
        confusion_matrix(PRED, -TARGET - 1, 3)
    with pytest.raises(ValueError, match="prediction values"):
        confusion_matrix(PRED + 5, TARGET, 3)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(PRED[:1], TARGET, 3)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ignore", [None, 255])
def test_matches_numpy_reference(seed: int, ignore: int | None) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    target = rng.integers(0, k, size=(3, 7, 9))
    pred = rng.integers(0, k, size=(3, 7, 9))
    pred[pred == k - 1] = 0
    if ignore is not None:
        target[rng.random(target.shape) < 0.2] = ignore
    expected = _numpy_reference(pred, target, k, ignore)
    matrix = ConfusionMatrix(k, ignore_index=ignore)
    matrix.update(torch.from_numpy(pred), torch.from_numpy(target))
    stats = matrix.compute()
    np.testing.assert_array_equal(matrix.matrix.numpy(), expected["matrix"])
    np.testing.assert_allclose(stats["per_class_iou"], expected["iou"], equal_nan=True)
    np.testing.assert_allclose(iou_from_confusion(matrix.matrix).numpy(), expected["iou"], equal_nan=True)
    for key in ("miou", "pixel_accuracy", "mean_class_accuracy"):
        assert stats[key] == pytest.approx(expected[key])


def test_accumulation_equals_single_update_and_merge() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (6, 8, 8), generator=generator)
    pred = torch.randint(0, 4, (6, 8, 8), generator=generator)
    whole = ConfusionMatrix(4)
    whole.update(pred, target)
    parts = [ConfusionMatrix(4) for _ in range(3)]
    for i, part in enumerate(parts):
        part.update(pred[2 * i : 2 * i + 2], target[2 * i : 2 * i + 2])
    assert torch.equal((parts[0] + parts[1] + parts[2]).matrix, whole.matrix)
    sequential = ConfusionMatrix(4)
    for i in range(6):
        sequential.update(pred[i], target[i])
    assert torch.equal(sequential.matrix, whole.matrix)
    assert torch.equal(parts[0].merge(parts[1]).merge(parts[2]).all_reduce().matrix, whole.matrix)
    sequential.reset()
    assert sequential.matrix.sum() == 0


def test_logits_equal_argmax() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 6, 7, generator=generator)
    target = torch.randint(0, 5, (2, 6, 7), generator=generator)
    from_logits, from_labels = ConfusionMatrix(5), ConfusionMatrix(5)
    from_logits.update(logits, target)
    from_labels.update(logits.argmax(1), target)
    assert torch.equal(from_logits.matrix, from_labels.matrix)
    assert miou(logits, target, 5) == miou(logits.argmax(1), target, 5)


def test_iou_error_map_codes() -> None:
    target = np.array([[1, 1, 0], [0, 255, 1]])
    pred = np.array([[1, 0, 1], [0, 1, 1]])
    expected = np.array([[1, 3, 2], [0, 0, 1]], dtype=np.uint8)
    codes = iou_error_map(pred, target, class_index=1, ignore_index=255)
    assert codes.dtype == np.uint8
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(iou_error_map(torch.from_numpy(pred), torch.from_numpy(target), 1, 255), expected)
    assert iou_error_map(pred, target, class_index=1)[1, 1] == 2
