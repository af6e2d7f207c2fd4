"""The Test set tab (demo/tabs/testset.py): confusion matrices, per-class intervals and the
paired-bootstrap ranking, read from test records made with segmodels.testset.record_test on
the tiny Shapes zoo, and hand-made matrices where the right answer is known."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from demo.core import App
from demo.errors import InputError
from demo.tabs.testset import VIEW, Confusion, ModelTest, TestSetTab, confusion_sentence, largest_confusions, ranking_table, row_percent
from demo.testset_charts import confusion_figure, per_class_interval_figure
from segmodels import modelcard, testset, zoo
from segmodels.bootstrap import paired_difference, verdict

CLASSES = ("background", "circle", "triangle", "rectangle")


@pytest.fixture(scope="module")
def recorded_zoo(tiny_zoo, tmp_path_factory):
    """The tiny zoo with test records for U-Net and U-Net++ (U-Net 3+ and DeepLabV3+ have none)."""
    weights = tmp_path_factory.mktemp("recorded") / "weights"
    shutil.copytree(tiny_zoo, weights)
    for name in ("shapes/unet", "shapes/unetpp"):
        testset.record_test(name, None, weights, resamples=50)
    return weights


@pytest.fixture
def tested_zoo(recorded_zoo, tmp_path):
    """A private copy of the recorded zoo (safe to damage)."""
    shutil.copytree(recorded_zoo, tmp_path / "weights")
    return tmp_path / "weights"


def test_heatmap_rows_sum_to_100_and_unetpp_follows_the_depth(tiny_config, tested_zoo):
    tab = TestSetTab(App(tiny_config(weights_dir=tested_zoo)))
    result = tab.view("shapes", "unetpp", 2)
    card = zoo.read_card("shapes/unetpp", tested_zoo)
    assert result.chosen.label == "U-Net++ L2" and result.chosen.evaluation == card.test_result(2)
    assert np.array_equal(result.chosen.per_image, testset.read_per_image("shapes/unetpp", 2, tested_zoo))
    rows = result.percent.sum(axis=1)
    assert np.allclose(rows[np.isfinite(rows)], 100.0) and np.isfinite(rows).any()
    figure = confusion_figure(result.percent, CLASSES, result.chosen.label, result.chosen.evaluation.num_images)
    z = np.array(figure.data[0].z, dtype=float)
    assert list(figure.data[0].y) == list(CLASSES) and np.allclose(np.nansum(z, axis=1)[np.isfinite(rows)], 100.0)
    assert result.tests.missing == ["unet3p", "deeplabv3p"]
    assert [m.label for m in result.tests.models] == ["U-Net", "U-Net++ L2"]
    # per-class IoU of both models, the mIoU first, each inside its interval
    table = result.per_class
    assert list(table["Class"][:5]) == ["<b>mIoU</b>", *CLASSES] and set(table["Model"]) == {"U-Net", "U-Net++ L2"}
    known = table.dropna()
    assert ((known["Low"] <= known["IoU"] + 1e-12) & (known["IoU"] <= known["High"] + 1e-12)).all()
    assert [trace.name for trace in per_class_interval_figure(table).data] == ["U-Net", "U-Net++ L2"]
    # a depth deeper than U-Net++ was evaluated at falls back to its deepest
    assert tab.view("shapes", "unetpp", 4).chosen.depth == max(r.depth for r in card.test.results)


def test_largest_confusions_of_a_hand_made_matrix():
    matrix = [[80, 15, 5, 0], [2, 98, 0, 0], [30, 10, 60, 0], [0, 0, 0, 0]]
    percent = row_percent(matrix)
    assert np.allclose(percent[:3].sum(axis=1), 100) and np.isnan(percent[3]).all()  # rectangle absent: no row
    found = largest_confusions(percent, CLASSES)
    assert found == [Confusion("triangle", "background", 30.0), Confusion("background", "circle", 15.0)]
    sentence = confusion_sentence("U-Net", found)
    assert "**triangle** is taken for **background** in 30% of its test pixels" in sentence and "**background** for **circle** in 15%" in sentence
    assert largest_confusions(row_percent(np.diag([5, 5, 5, 5])), CLASSES) == []
    assert "confuses no class" in confusion_sentence("U-Net", [])


def per_image_matrices(images: int, right: float, seed: int) -> np.ndarray:
    """``images`` 4-class confusion matrices with about ``right`` of each class's pixels on the diagonal."""
    rng = np.random.default_rng(seed)
    matrices = np.zeros((images, 4, 4), dtype=np.int64)
    for image in range(images):
        for true in range(4):
            hits = rng.binomial(200, right)
            matrices[image, true, true] = hits
            matrices[image, true, (true + 1) % 4] = 200 - hits
    return matrices


def model_test(arch: str, per_image: np.ndarray) -> ModelTest:
    evaluation = testset.summarise(per_image, CLASSES, None, arch, resamples=200)
    record = modelcard.TestRecord((evaluation,), f"{arch}.test.npz", "0" * 64, "0" * 64, (64, 64), 200, 0, "python -m segmodels test-card")
    return ModelTest(arch, None, evaluation, record, per_image)


def test_ranking_says_worse_only_when_the_paired_interval_excludes_zero():
    strong = per_image_matrices(60, 0.9, 1)
    nearly = strong.copy()
    nearly[0, 0, 0] -= 1
    nearly[0, 0, 1] += 1
    models = [model_test("unet", per_image_matrices(60, 0.6, 2)), model_test("unet3p", strong), model_test("deeplabv3p", nearly)]
    table = ranking_table(models)
    assert list(table["Model"]) == ["U-Net 3+", "DeepLabV3+", "U-Net"]
    verdicts = dict(zip(table["Model"], table["Verdict"]))
    assert verdicts == {"U-Net 3+": "highest mIoU (the reference)", "DeepLabV3+": "not distinguishable from U-Net 3+", "U-Net": "worse than U-Net 3+"}
    best = models[1].evaluation.miou_interval
    assert table["Test mIoU (95% interval)"][0] == f"{best.estimate:.3f} ({best.low:.3f} to {best.high:.3f})"
    worse = paired_difference(models[0].per_image, strong, 200, 0)
    assert verdict(worse) == "worse" and table.loc[table["Model"] == "U-Net", "Minus the best (95% interval)"].item() == f"{worse.estimate:+.3f} ({worse.low:+.3f} to {worse.high:+.3f})"
    other_images = model_test("unet", per_image_matrices(30, 0.6, 2))
    assert ranking_table([models[1], other_images])["Verdict"].tolist() == ["highest mIoU (the reference)", "not compared: 30 test images against 60"]
    assert ranking_table([models[1]])["Verdict"].tolist() == ["the only model evaluated"]


def test_a_set_without_test_records_gets_the_sentence_not_an_error(tiny_config, own_zoo):
    tab = TestSetTab(App(tiny_config(weights_dir=own_zoo)))
    out = VIEW.named(tab.show("shapes", None, 4))
    assert out["status"].startswith("No Shapes model has been evaluated on its test split yet")
    assert "python -m segmodels test-card shapes/unet shapes/unetpp shapes/unet3p shapes/deeplabv3p --data DIR" in out["status"]
    assert "inline-error" not in out["status"]
    assert all(out[name]["visible"] is False for name in ("heatmap", "per_class", "ranking"))


def test_presenter_shows_the_records_and_refuses_bad_input(tiny_config, tested_zoo):
    tab = TestSetTab(App(tiny_config(weights_dir=tested_zoo)))
    out = VIEW.named(tab.show("shapes", "unet", 3))
    assert out["model"]["choices"] == [("U-Net", "unet"), ("U-Net++ L3", "unetpp")] and out["model"]["value"] == "unet"
    assert out["heatmap"]["visible"] and out["per_class"]["visible"] and out["ranking"]["visible"]
    assert "highest mIoU (the reference)" in out["ranking"]["value"] and out["ranking"]["value"].count("\n| **U-Net") == 2
    assert "100 images" in out["status"] and "50 bootstrap resamples" in out["status"] and "U-Net 3+, DeepLabV3+" in out["status"]
    assert "U-Net's" in out["confusions"] or "confuses no class" in out["confusions"]
    val = zoo.read_card("shapes/unet", tested_zoo).val_miou()
    assert f"On the val split its card gives {val:.3f}" in out["confusions"]
    assert "Unknown model set 'nope'" in VIEW.named(tab.show("nope", None, 4))["status"]
    assert "Unknown model 'resnet'" in VIEW.named(tab.show("shapes", "resnet", 4))["status"]
    with pytest.raises(InputError, match="depth"):
        tab.view("shapes", "unet", 9)


def test_a_damaged_per_image_file_is_reported_in_the_ranking(tiny_config, tested_zoo):
    (tested_zoo / "shapes" / "unet.test.npz").write_bytes(b"damaged")
    result = TestSetTab(App(tiny_config(weights_dir=tested_zoo))).view("shapes", "unet", 4)
    assert result.tests.models[0].per_image is None
    [not_compared] = [v for v in result.ranking["Verdict"] if v.startswith("not compared:")]
    assert "does not match its card's SHA-256" in not_compared


def test_tab_is_in_the_dashboard_as_a_light_event(tiny_config):
    from demo.ui import build_demo

    demo = build_demo(tiny_config())
    events = {fn.api_name: fn for fn in demo.fns.values()}
    assert events["testset"].concurrency_id == "light" and events["testset"].api_visibility == "private"
    labels = [c["props"]["label"] for c in demo.get_config_file()["components"] if c["type"] == "tabitem"]
    assert "Test set" in labels
