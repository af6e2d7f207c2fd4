"""Tests for Imbalanced Shapes (segmodels.data.shapes) and the loss lab (segmodels.teach.losslab)."""

from __future__ import annotations

import hashlib
import json
import math
import runpy

import numpy as np
import pytest
import torch

from conftest import REPO
from segmodels.data.shapes import RARE_CLASS, ImbalancedShapesDataset, render_imbalanced_shapes, render_shapes
from segmodels.losses import build_loss, class_weights_inverse_share, class_weights_median_frequency, dataset_class_statistics
from segmodels.teach.losslab import LAB_LOSSES, LabSettings, class_weights_used, lab_class_weights, lab_data, run_loss_lab

SIZE = 64
RARE_SHARE_BOUND = 0.01
SMALL = LabSettings(train_images=64, eval_images=16, eval_every=3, max_steps=6, time_budget_s=60.0)


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



def _comparable(record) -> dict:
    values = record.as_dict()
    del values["seconds"], values["setup_seconds"]
    return values


def test_lab_is_deterministic_and_keeps_global_state() -> None:
    threads_before = torch.get_num_threads()
    rng_before = torch.get_rng_state()
    first = list(run_loss_lab("focal", gamma=1.5, settings=SMALL))
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before
    second = list(run_loss_lab("focal", gamma=1.5, settings=SMALL))
    assert [r.step for r in first] == [0, 3, 6]
    assert [_comparable(r) for r in first] == [_comparable(r) for r in second]
    assert first[-1].done and first[-1].stop_reason == "max steps" and not first[1].done
    assert first[0].train_loss is None and all(r.train_loss > 0 for r in first[1:])
    assert all(len(r.per_class_iou) == 4 and len(r.per_class_accuracy) == 4 for r in first)
    other = list(run_loss_lab("ce", settings=SMALL))
    assert other[-1].train_loss != first[-1].train_loss


def test_lab_sets_threads_only_while_it_computes() -> None:
    previous = torch.get_num_threads()
    seen = []
    lab = run_loss_lab("wce", settings=SMALL, threads=1)
    try:
        torch.set_num_threads(2 if previous == 1 else 1)
        outside = torch.get_num_threads()
        for _ in lab:
            seen.append(torch.get_num_threads())
    finally:
        torch.set_num_threads(previous)
    assert seen and all(count == outside for count in seen)


def test_lab_stops_on_request_or_close() -> None:
    calls = []

    def stop_after_two() -> bool:
        calls.append(1)
        return len(calls) >= 2

    records = list(run_loss_lab("mfb", settings=SMALL, should_stop=stop_after_two))
    assert records[-1].done and records[-1].stop_reason == "stopped" and records[-1].step == 2

    previous = torch.get_num_threads()
    lab = run_loss_lab("ce", settings=SMALL)
    next(lab)
    lab.close()
    assert torch.get_num_threads() == previous
    with pytest.raises(StopIteration):
        next(lab)


def test_lab_stops_at_the_time_budget_on_its_clock_and_learns() -> None:
    """Each step takes half a second of a fake clock (``should_stop`` is asked once a step), so
    a 10 s budget stops the run at the first step that finds 10 s gone: step 21."""
    settings = LabSettings(train_images=128, eval_images=16, eval_every=5, max_steps=None, time_budget_s=10.0)
    now = [100.0]

    def half_a_second_passes() -> bool:
        now[0] += 0.5
        return False

    records = list(run_loss_lab("ce", settings=settings, should_stop=half_a_second_passes, clock=lambda: now[0]))
    last = records[-1]
    assert last.done and last.stop_reason == "time budget"
    assert [record.step for record in records] == [0, 5, 10, 15, 20, 21]
    assert [record.seconds for record in records] == [0.0, 2.5, 5.0, 7.5, 10.0, 10.0] and last.setup_seconds == 0.0
    assert last.train_loss < records[1].train_loss


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"loss": "ohem"}, "loss lab offers"),
        ({"loss": "focal", "gamma": -1.0}, "gamma"),
        ({"loss": "focal", "gamma": float("nan")}, "gamma"),
        ({"loss": "ce", "threads": 0}, "threads"),
        ({"loss": "ce", "threads": 1.5}, "threads"),
        ({"loss": "ce", "should_stop": True}, "should_stop"),
        ({"loss": "ce", "clock": 3.0}, "clock"),
        ({"loss": "ce", "settings": LabSettings(time_budget_s=0.0)}, "time_budget_s"),
        ({"loss": "ce", "settings": LabSettings(max_steps=0)}, "max_steps"),
        ({"loss": "ce", "settings": LabSettings(batch_size=0)}, "batch_size"),
        ({"loss": "ce", "settings": LabSettings(image_size=40)}, "image_size"),
        ({"loss": "ce", "settings": LabSettings(rare_image_fraction=2.0)}, "rare_image_fraction"),
        ({"loss": "ce", "settings": LabSettings(max_steps=2.5)}, "max_steps"),
    ],
)
def test_lab_rejects_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        run_loss_lab(**kwargs)


def test_class_weights_match_the_losses() -> None:
    masks = lab_data(SMALL)[0][1]
    counts, image_counts = dataset_class_statistics([masks], 4)
    shown = {info["loss"]: info for info in lab_class_weights(settings=SMALL)}
    assert set(shown) == set(LAB_LOSSES)
    np.testing.assert_allclose(shown["wce"]["weights"], class_weights_inverse_share(counts).numpy(), rtol=1e-6)
    np.testing.assert_allclose(shown["wfocal"]["weights"], shown["wce"]["weights"])
    np.testing.assert_allclose(
        shown["mfb"]["weights"], class_weights_median_frequency(counts, image_counts).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(shown["mfb"]["weights"], build_loss("mfb", 4, counts, image_counts=image_counts).weight)
    assert shown["ce"]["weights"] == [1.0] * 4 and shown["focal"]["spread"] == 1.0
    assert math.isclose(sum(shown["ce"]["pixel_share"]), 1.0)
    assert int(np.argmax(shown["mfb"]["weights"])) == RARE_CLASS
    assert shown["mfb"]["spread"] > 5 * shown["wce"]["spread"]
    assert shown["focal"]["gamma"] == 2.0 and shown["wce"]["gamma"] is None
    np.testing.assert_allclose(shown["ce"]["loss_share"], shown["ce"]["pixel_share"], rtol=1e-6)
    rare_loss_share = {loss: shown[loss]["loss_share"][RARE_CLASS] for loss in LAB_LOSSES}
    assert rare_loss_share["mfb"] > rare_loss_share["wce"] > rare_loss_share["ce"]


def test_class_weights_of_given_masks() -> None:
    masks = np.array([[[0, 0, 0, 0], [0, 0, 1, 1]], [[0, 0, 0, 0], [0, 0, 0, 2]]])
    info = class_weights_used("wce", masks=masks)
    np.testing.assert_allclose(info["weights"], [3 / 16, 14 / 16, 15 / 16, 1.0])
    np.testing.assert_allclose(info["pixel_share"], [13 / 16, 2 / 16, 1 / 16, 0.0])
    assert info["spread"] == pytest.approx(16 / 3)
    np.testing.assert_allclose(info["loss_share"], np.array([39, 28, 15, 0]) / 82)
    with pytest.raises(ValueError, match="loss lab offers"):
        class_weights_used("dice", masks=masks)




def test_shipped_curves_match_the_lab() -> None:
    path = REPO / "assets" / "losslab" / "curves.json"
    assert path.stat().st_size < 200_000
    shipped = json.loads(path.read_text())
    assert shipped["settings"]["max_steps"] == LabSettings().max_steps
    assert {k: v for k, v in shipped["settings"].items() if k != "time_budget_s"} == {
        k: v for k, v in LabSettings().as_dict().items() if k != "time_budget_s"
    }
    assert [run["loss"] for run in shipped["runs"]] == list(LAB_LOSSES)
    for run in shipped["runs"]:
        assert run["steps"] == LabSettings().max_steps and run["stop_reason"] == "max steps"
        assert run["curves"]["step"][-1] == run["steps"]
        assert run["curves"]["per_class_iou"][-1] == run["final"]["per_class_iou"]
    assert shipped["torch_version"] and shipped["created"]


@pytest.mark.slow
def test_precompute_script_writes_and_updates(tmp_path) -> None:
    script = runpy.run_path(str(REPO / "scripts" / "precompute_losslab.py"), run_name="precompute")
    out = tmp_path / "curves.json"
    assert script["main"](["--out", str(out), "--budget", "0.5", "--losses", "ce"]) == 0
    assert script["main"](["--out", str(out), "--budget", "0.5", "--losses", "wfocal", "--gamma", "1", "--update"]) == 0
    written = json.loads(out.read_text())
    assert [run["loss"] for run in written["runs"]] == ["ce", "wfocal"]
    assert written["runs"][1]["gamma"] == 1.0 and written["runs"][0]["stop_reason"] == "time budget"
    with pytest.raises(SystemExit, match="differ"):
        script["main"](["--out", str(out), "--budget", "0.7", "--losses", "ce", "--update"])
