"""Panoptic-DeepLab heads, targets, grouping and panoptic quality (segmodels.models.panoptic,
segmodels.panoptic, segmodels.panoptic_quality)."""

import numpy as np
import pytest
import torch

from segmodels import create_model
from segmodels.models.panoptic import PanopticDeepLab, PanopticOutput
from segmodels.panoptic import (
    centre_and_offset_targets,
    connected_components,
    find_centres,
    group_pixels,
    majority_vote,
    panoptic_from_output,
    panoptic_loss,
)
from segmodels.panoptic_quality import (
    LABEL_DIVISOR,
    VOID,
    PanopticQuality,
    panoptic_ids,
)

SQUARE = 1
NAMES = ["background", "square", "disc"]
THINGS = (1, 2)


def tiny_panoptic() -> PanopticDeepLab:
    torch.manual_seed(0)
    return PanopticDeepLab(create_model("deeplabv3p", 3, base_channels=4, aspp_channels=8, low_level_channels=4), head_channels=4)


def two_touching_squares() -> tuple[np.ndarray, np.ndarray]:
    """A 64 x 64 scene: two 20 x 20 squares of one class side by side, touching along a column."""
    semantic = np.zeros((64, 64), dtype=np.uint8)
    instances = np.zeros((64, 64), dtype=np.int32)
    semantic[20:40, 10:50] = SQUARE
    instances[20:40, 10:30] = 1
    instances[20:40, 30:50] = 2
    return semantic, instances


def output_from_targets(semantic: np.ndarray, instances: np.ndarray, num_classes: int = 3) -> PanopticOutput:
    """What a perfect model would predict: one-hot logits and the exact heatmap and offsets."""
    heatmap, offsets = centre_and_offset_targets(instances)
    logits = torch.nn.functional.one_hot(torch.from_numpy(semantic).long(), num_classes).permute(2, 0, 1).float()
    return PanopticOutput(logits[None], torch.from_numpy(heatmap)[None, None], torch.from_numpy(offsets)[None])


# ---------------------------------------------------------------------------- model


def test_heads_give_every_map_at_the_input_size():
    model = tiny_panoptic().eval()
    with torch.inference_mode():
        output = model(torch.rand(2, 3, 50, 70))
    assert output.semantic.shape == (2, 3, 50, 70) and output.centre.shape == (2, 1, 50, 70) and output.offset.shape == (2, 2, 50, 70)


def test_the_semantic_network_is_the_semantic_model_unchanged():
    model = tiny_panoptic().eval()
    image = torch.rand(1, 3, 48, 40)
    with torch.inference_mode():
        torch.testing.assert_close(model(image).semantic, model.semantic(image))


def test_a_prunable_model_is_refused():
    with pytest.raises(ValueError, match="can be pruned"):
        PanopticDeepLab(create_model("unetpp", 3, base_channels=4))


def test_the_loss_trains_all_three_maps():
    model = tiny_panoptic().train()
    semantic, instances = two_touching_squares()
    heatmap, offsets = centre_and_offset_targets(instances)
    terms = panoptic_loss(model(torch.rand(1, 3, 64, 64)), torch.from_numpy(semantic).long()[None], torch.from_numpy(heatmap)[None],
                          torch.from_numpy(offsets)[None], torch.from_numpy(semantic > 0)[None])
    assert set(terms) == {"semantic", "centre", "offset", "total"} and all(v.item() > 0 for v in terms.values())
    terms["total"].backward()
    for head in (model.centre_head, model.offset_head, model.semantic.heads):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


def test_a_perfect_prediction_has_zero_loss_and_offsets_count_only_on_things():
    semantic, instances = two_touching_squares()
    output = output_from_targets(semantic, instances)
    output.semantic = output.semantic * 100
    heatmap, offsets = centre_and_offset_targets(instances)
    things = torch.from_numpy(semantic > 0)[None]
    terms = panoptic_loss(output, torch.from_numpy(semantic).long()[None], torch.from_numpy(heatmap)[None], torch.from_numpy(offsets)[None], things)
    assert float(terms["total"]) == pytest.approx(0, abs=1e-6)
    output.offset[:, :, ~things[0]] = 50.0  # wrong offsets off the objects are not penalised
    output.offset[:, 0, 25, 15] += 8.0  # one wrong pixel on an object is: 8 px of L1 over 800 thing pixels, times 0.01
    terms = panoptic_loss(output, torch.from_numpy(semantic).long()[None], torch.from_numpy(heatmap)[None], torch.from_numpy(offsets)[None], things)
    assert float(terms["offset"]) == pytest.approx(0.01 * 8 / 800, rel=1e-5)  # L1 summed over dy, dx, averaged over pixels


# ---------------------------------------------------------------------------- targets


def test_targets_put_a_unit_peak_on_each_centre_of_mass_and_point_every_object_pixel_at_it():
    semantic, instances = two_touching_squares()
    heatmap, offsets = centre_and_offset_targets(instances, sigma=4.0)
    assert heatmap.max() == pytest.approx(np.exp(-0.5 / (2 * 4.0**2)), abs=1e-6)  # centres (29.5, 19.5) and (29.5, 39.5) fall between pixels
    assert heatmap[29, 19] == heatmap[30, 20] and heatmap[29, 19] > heatmap[29, 29]
    yy, xx = np.mgrid[0:64, 0:64]
    for instance_id, centre in ((1, (29.5, 19.5)), (2, (29.5, 39.5))):
        inside = instances == instance_id
        np.testing.assert_allclose(yy[inside] + offsets[0][inside], centre[0])
        np.testing.assert_allclose(xx[inside] + offsets[1][inside], centre[1])
    assert not offsets[:, instances == 0].any()


# ---------------------------------------------------------------------------- grouping


def test_grouping_separates_two_touching_squares_that_connected_components_merge():
    semantic, instances = two_touching_squares()
    assert connected_components(semantic, THINGS)[1] == 1
    prediction = panoptic_from_output(output_from_targets(semantic, instances), THINGS)[0]
    assert prediction.count == 2 and len(prediction.centres) == 2
    found = {tuple(np.unique(prediction.instances[instances == i]).tolist()) for i in (1, 2)}
    assert found == {(1,), (2,)}  # each square is exactly one predicted instance
    assert not prediction.instances[semantic == 0].any()


def test_noisy_offsets_still_group_each_pixel_with_its_own_centre():
    semantic, instances = two_touching_squares()
    output = output_from_targets(semantic, instances)
    output.offset += torch.randn(output.offset.shape, generator=torch.Generator().manual_seed(0)) * 3.0  # well under the 10 px to the boundary
    prediction = panoptic_from_output(output, THINGS)[0]
    mistakes = sum(int((prediction.instances[instances == i] != np.bincount(prediction.instances[instances == i]).argmax()).sum()) for i in (1, 2))
    assert prediction.count == 2 and mistakes < 0.02 * (instances > 0).sum()


def test_centres_are_peaks_above_the_threshold_one_per_nms_window_top_k_highest_first():
    heatmap = torch.zeros(32, 32)
    heatmap[5, 5], heatmap[6, 7] = 0.9, 0.8  # 2 px apart: one survives a 7 x 7 window
    heatmap[20, 20], heatmap[25, 5], heatmap[10, 28] = 0.5, 0.05, 0.7
    assert find_centres(heatmap).tolist() == [[5, 5], [10, 28], [20, 20]]
    assert find_centres(heatmap, nms_kernel=3).tolist() == [[5, 5], [6, 7], [10, 28], [20, 20]]
    assert find_centres(heatmap, top_k=2).tolist() == [[5, 5], [10, 28]]
    assert find_centres(heatmap, threshold=0.01).tolist()[-1] == [25, 5]
    plateau = torch.zeros(16, 16)
    plateau[7:9, 7:9] = 0.6  # a centre at (7.5, 7.5): four equal pixels
    assert find_centres(plateau).tolist() == [[7, 7]]
    with pytest.raises(ValueError, match="odd"):
        find_centres(heatmap, nms_kernel=4)


def test_without_centres_no_pixel_gets_an_instance_and_thing_pixels_become_void():
    semantic, instances = two_touching_squares()
    output = output_from_targets(semantic, instances)
    assert not group_pixels(torch.from_numpy(semantic > 0), output.offset[0], torch.zeros(0, 2)).any()
    output.centre.zero_()
    prediction = panoptic_from_output(output, THINGS)[0]
    assert prediction.count == 0 and (panoptic_ids(prediction.semantic, prediction.instances, THINGS)[semantic > 0] == VOID).all()


def test_each_instance_takes_the_class_most_of_its_pixels_carry():
    semantic = np.array([[1, 2, 2, 0], [1, 1, 2, 0]], dtype=np.uint8)
    instances = np.array([[1, 1, 1, 0], [2, 2, 2, 0]])
    np.testing.assert_array_equal(majority_vote(semantic, instances, THINGS), [[2, 2, 2, 0], [1, 1, 1, 0]])


# ---------------------------------------------------------------------------- panoptic quality


def segments(*regions: tuple[int, int, slice, slice], size: int = 10) -> np.ndarray:
    """A panoptic id map: background (stuff) everywhere, then each (class, instance, rows, cols)."""
    ids = np.zeros((size, size), dtype=np.int64)
    for category, instance, rows, cols in regions:
        ids[rows, cols] = category * LABEL_DIVISOR + instance
    return ids


def test_pq_is_sq_times_rq_with_matches_above_half_iou():
    # Ground truth: squares A (rows 0-3, cols 0-4: 20 px) and B (rows 6-9, cols 0-4: 20 px).
    truth = segments((1, 1, slice(0, 4), slice(0, 5)), (1, 2, slice(6, 10), slice(0, 5)))
    # Prediction: A less one column (16 of 20 px: IoU 0.8), B missed, a spurious square elsewhere.
    predicted = segments((1, 7, slice(0, 4), slice(0, 4)), (1, 8, slice(6, 9), slice(7, 10)))
    quality = PanopticQuality(NAMES, THINGS)
    quality.update(predicted, truth)
    square = quality.compute()["per_class"]["square"]
    assert (square["tp"], square["fp"], square["fn"]) == (1, 1, 1)
    assert square["sq"] == pytest.approx(0.8) and square["rq"] == pytest.approx(1 / (1 + 0.5 + 0.5))
    assert square["pq"] == pytest.approx(0.8 / 2) == square["sq"] * square["rq"]
    background = quality.compute()["per_class"]["background"]  # 75 predicted px, 60 true, 51 shared: IoU 51/84
    assert background["tp"] == 1 and background["pq"] == pytest.approx(51 / 84)
    result = quality.compute()
    assert result["per_class"]["disc"] is None  # never occurred: left out of the means
    assert result["pq"] == pytest.approx((0.4 + 51 / 84) / 2) and result["pq_things"] == pytest.approx(0.4) and result["pq_stuff"] == pytest.approx(51 / 84)


def test_an_iou_of_exactly_one_half_is_no_match_and_classes_never_match_across():
    truth = segments((1, 1, slice(0, 4), slice(0, 4)))  # 16 px
    half = segments((1, 3, slice(0, 4), slice(0, 2)))  # 8 of them: IoU 0.5
    quality = PanopticQuality(NAMES, THINGS)
    quality.update(half, truth)
    assert quality.compute()["per_class"]["square"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "tp": 0, "fp": 1, "fn": 1}
    other_class = PanopticQuality(NAMES, THINGS)
    other_class.update(segments((2, 1, slice(0, 4), slice(0, 4))), truth)
    assert other_class.compute()["per_class"]["square"]["fn"] == 1 and other_class.compute()["per_class"]["disc"]["fp"] == 1


def test_merged_touching_objects_score_nothing_and_split_ones_score_fully():
    semantic, instances = two_touching_squares()
    truth = panoptic_ids(semantic, instances, THINGS)
    merged, _ = connected_components(semantic, THINGS)
    quality = PanopticQuality(NAMES, THINGS)
    quality.update(panoptic_ids(semantic, merged, THINGS), truth)  # one region over two squares: IoU 0.5 with each
    assert quality.compute()["per_class"]["square"]["pq"] == 0.0
    prediction = panoptic_from_output(output_from_targets(semantic, instances), THINGS)[0]
    quality = PanopticQuality(NAMES, THINGS)
    quality.update(panoptic_ids(prediction.semantic, prediction.instances, THINGS), truth)
    assert quality.compute()["pq"] == pytest.approx(1.0)


def test_void_pixels_count_against_the_ground_truth_segment_they_miss():
    truth = segments((1, 1, slice(0, 4), slice(0, 5)))
    predicted = truth.copy()
    predicted[0, :] = VOID  # 5 of the square's 20 pixels left unassigned: IoU 15/20
    quality = PanopticQuality(NAMES, THINGS)
    quality.update(predicted, truth)
    assert quality.compute()["per_class"]["square"]["sq"] == pytest.approx(0.75)


def test_bad_maps_are_clear_errors():
    with pytest.raises(ValueError, match="differ in size"):
        PanopticQuality(NAMES, THINGS).update(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="class ids outside"):
        PanopticQuality(NAMES, THINGS).update(np.full((2, 2), 5 * LABEL_DIVISOR), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="differ in shape"):
        panoptic_ids(np.zeros((2, 2)), np.zeros((2, 3)), THINGS)
    with pytest.raises(ValueError, match="thing classes"):
        PanopticQuality(NAMES, (1, 7))
