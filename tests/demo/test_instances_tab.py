"""The Semantic vs instance tab (demo/tabs/instances.py) with an instance model: on a tiny
untrained one (the plumbing, the counts in words, a broken file, a real browser on a desktop
and a phone) and on the shipped Shapes one (touching circles that connected components merge
come out as two objects; its card's PQ is what the evaluation command measures)."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import eventually
from demo import DemoConfig
from demo.core import App
from demo.session import SessionCache
from demo.tabs import instances
from segmodels import create_model, zoo
from segmodels.cards import model_spec
from segmodels.data import SHAPES, build_dataset
from segmodels.models.panoptic import PanopticDeepLab
from segmodels.panoptic import (
    SHAPES_THING_CLASSES,
    connected_components,
    evaluate_panoptic,
    export_panoptic,
    instance_models,
    load_panoptic,
    panoptic_spec,
)

TOUCHING_CIRCLES = "shapes-1002"  # a shipped example: two circles that touch
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and Path(p).is_file()), None)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def instance_zoo(tiny_zoo, tmp_path_factory):
    """A copy of the tiny zoo with an untrained tiny instance model for Shapes."""
    root = tmp_path_factory.mktemp("instance_zoo")
    weights = root / "weights"
    shutil.copytree(tiny_zoo, weights)
    torch.manual_seed(0)
    options = {"aspp_channels": 8, "low_level_channels": 4}
    spec = panoptic_spec(model_spec("deeplabv3p", "plain", SHAPES.num_classes, 4, options), head_channels=4)
    model = PanopticDeepLab(create_model("deeplabv3p", SHAPES.num_classes, base_channels=4, **options), head_channels=4)
    run = root / "run"
    run.mkdir()
    torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, run / "best.pt")
    card = {**spec, "note": "TEST FIXTURE: untrained; the scores are made up", "thing_classes": list(SHAPES_THING_CLASSES)}
    (run / "card.json").write_text(json.dumps(card))
    export_panoptic(run, "shapes", "panoptic_deeplab", weights, extra={"evaluation": {"pq": 0.25, "connected_components": {"pq": 0.125}, "command": "made-up command"}})
    return weights


@pytest.fixture
def app(tiny_config, instance_zoo) -> App:
    return App(tiny_config(weights_dir=instance_zoo))


def test_counts_are_in_words_that_agree_with_them():
    assert [instances.plural(n, "region") for n in (0, 1, 2)] == ["0 regions", "1 region", "2 regions"]
    assert instances.plural(1, "separate object") == "1 separate object"


def test_touching_objects_are_found_among_the_examples(app):
    squares = np.zeros((20, 20), dtype=np.uint8)
    squares[5:10, 2:12] = 1
    objects = np.zeros((20, 20), dtype=np.int32)
    objects[5:10, 2:7], objects[5:10, 7:12] = 1, 2
    assert instances.merges_touching(squares, objects)
    apart = squares.copy()
    apart[:, 7] = 0
    assert not instances.merges_touching(apart, np.where(apart > 0, objects, 0))
    assert not instances.merges_touching(np.where(objects == 2, 2, squares), objects)  # touching, but of two classes
    key, label = instances.touching_example(app, "shapes")
    current = app.images.current(key, None, None, "shapes")
    assert instances.merges_touching(current.gt, current.instances) and label in instances.touching_label(app, "shapes")
    assert instances.PICK.named(instances.InstancesTab(app).pick_touching("shapes")) == {"example": key, "image_file": None, "mask_file": None}


def test_the_instance_model_is_not_a_fifth_semantic_model(app, instance_zoo):
    assert instance_models(instance_zoo, "shapes") == ["panoptic_deeplab"]
    assert not any("instance" in name for name in zoo.list_models(instance_zoo))
    assert app.choices.archs("shapes") == ["unet", "unetpp", "unet3p", "deeplabv3p"]
    assert not any("instance" in name for name in zoo.list_models())  # the shipped zoo as well
    assert instance_models(zoo.WEIGHTS_DIR, "shapes") == ["panoptic_deeplab"] and instance_models(zoo.WEIGHTS_DIR, "camvid") == []


def test_with_an_instance_model_four_panels_whose_counts_match_the_note(app):
    tab = instances.InstancesTab(app)
    current = app.images.current("shapes-1000", None, None, "shapes")
    result = tab.instances(current, "unet", "all classes", 4, SessionCache())
    assert result.source == "Panoptic-DeepLab" and result.predicted is not None
    assert result.component_count == connected_components(result.labels, SHAPES_THING_CLASSES)[1]
    assert result.predicted_count == len(np.unique(result.predicted[result.predicted > 0])) == len(result.centres)
    assert f"{instances.plural(result.component_count, 'region')}." in result.note
    assert f"Panoptic-DeepLab's: {instances.plural(result.predicted_count, 'object')}:" in result.note
    assert f"{instances.plural(result.truth_count, 'separate object')}." in result.note
    assert "PQ) 0.250" in result.note and "0.125" in result.note and "made-up command" in result.note
    out = instances.VIEW.named(tab.show("shapes-1000", None, None, "shapes", "unet", "all classes", 4, None))
    assert all(out[panel]["visible"] for panel in instances.PANELS)
    assert instances.CHOICES.named(tab.choices("shapes"))["model"]["visible"] is False  # the instance model makes the mask


def test_one_class_and_stuff(app):
    tab = instances.InstancesTab(app)
    current = app.images.current("shapes-1000", None, None, "shapes")
    circles = tab.instances(current, "unet", "circle", 4, SessionCache())
    assert not np.isin(circles.labels[circles.predicted > 0], [2, 3]).any()
    assert set(np.unique(current.gt[circles.truth > 0])) <= {1}
    background = tab.instances(current, "unet", "background", 4, SessionCache())
    assert background.predicted_count == 0 and "*stuff*" in background.note and "0 objects" in background.note


def test_broken_instance_weights_are_a_clear_message(tiny_config, instance_zoo, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(instance_zoo, weights)
    path = weights / "shapes" / "instance" / "panoptic_deeplab.pt"
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    out = instances.VIEW.named(instances.InstancesTab(App(tiny_config(weights_dir=weights))).show("shapes-1000", None, None, "shapes", "unet", "all classes", 4, None))
    assert "instance model of this set is unavailable" in out["note"] and "corrupted" in out["note"]
    assert not any(out[panel]["visible"] for panel in instances.PANELS)


# ---------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped_app() -> App:
    return App(DemoConfig(weights_dir=zoo.WEIGHTS_DIR, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False))


def best_iou(region: np.ndarray, labelled: np.ndarray) -> float:
    ids, overlaps = np.unique(labelled[region & (labelled > 0)], return_counts=True)
    return max((overlap / np.logical_or(region, labelled == i).sum() for i, overlap in zip(ids, overlaps)), default=0.0)


def test_the_shipped_model_separates_touching_circles_that_connected_components_merge(shipped_app):
    current = shipped_app.images.current(TOUCHING_CIRCLES, None, None, "shapes")
    circles = [current.instances == i for i in np.unique(current.instances[current.gt == 1])]
    assert len(circles) == 2 and connected_components(current.gt, [1])[1] == 1  # one region in the ground truth's own mask
    result = instances.InstancesTab(shipped_app).instances(current, None, "all classes", 4, SessionCache())
    assert result.component_count == 1 and result.predicted_count == result.truth_count == 2
    def majority(labelled: np.ndarray, region: np.ndarray) -> int:
        return int(np.bincount(labelled[region]).argmax())

    assert majority(result.components, circles[0]) == majority(result.components, circles[1]) > 0  # one region over both
    assert 0 < majority(result.predicted, circles[0]) != majority(result.predicted, circles[1]) > 0
    assert all(best_iou(circle, result.predicted) > 0.9 for circle in circles)  # one object each, matching its circle
    assert "1 region." in result.note and "2 objects" in result.note and "2 separate objects" in result.note


def test_the_shipped_card_records_what_the_evaluation_command_measures():
    card = zoo.load_card("instance/panoptic_deeplab", zoo.WEIGHTS_DIR / "shapes")
    assert card["weights_dtype"] == "float16" and (zoo.WEIGHTS_DIR / "shapes" / "instance" / card["weights_file"]).stat().st_size < 2e6
    evaluation = card["evaluation"]
    assert evaluation["split"] == "val" and evaluation["num_images"] == 100 and "train_shapes_instance.py evaluate" in evaluation["command"]
    torch.set_num_threads(1)
    val = build_dataset("shapes", split="val")
    scores = evaluate_panoptic(load_panoptic("shapes", "panoptic_deeplab"), [val.sample(i) for i in range(len(val))], SHAPES.class_names, SHAPES_THING_CLASSES)
    for key in ("pq", "sq", "rq", "pq_things", "pq_stuff"):
        assert scores[key] == pytest.approx(evaluation[key], abs=0.005), key
        assert scores["connected_components"][key] == pytest.approx(evaluation["connected_components"][key], abs=0.005), key
    assert scores["pq"] > scores["connected_components"]["pq"]


# ---------------------------------------------------------------------------- a real browser


@pytest.fixture(scope="module")
def server(instance_zoo):
    from demo import build_demo, launch_kwargs

    config = DemoConfig(weights_dir=instance_zoo, camvid_dir=None, device="cpu", torch_threads=1, warmup=0, repeats=1, num_shapes_examples=3, shapes_size=96, rf_input_size=(64, 64))
    demo = build_demo(config)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(config))
    yield demo.local_url
    demo.close()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary; install it with scripts/install_chromium.sh")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("device", [dict(viewport={"width": 1440, "height": 900}), dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)], ids=["desktop", "phone"])
def test_the_four_panels_in_a_browser(server, device):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(**device)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server, wait_until="domcontentloaded")
        page.locator("#current-image").get_by_text("Current image:").wait_for(timeout=30_000)
        page.get_by_role("tab", name="Semantic vs instance", exact=True).click()
        page.get_by_text(re.compile(r"ndimage\.label\) of Panoptic-DeepLab")).wait_for(timeout=60_000)
        width = device["viewport"]["width"]

        def fits(box) -> bool:
            return box is not None and box["width"] > 100 and 0 <= box["x"] and box["x"] + box["width"] <= width

        for label in ("Semantic", "Regions", "Instances", "Ground truth"):
            eventually(page.locator("[role='tabpanel']:visible .seg-img").filter(has_text=label).first.bounding_box, fits, what=f"the {label} panel's box")
        eventually(lambda: page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"), lambda wide: wide <= 1, what="the page scrolls sideways by")
        page.get_by_role("button", name=re.compile(r"Show Shapes #\d+: touching objects")).click()  # 96 px Shapes #1001 has touching objects
        page.get_by_text(re.compile(r"\*?Shapes #1001\*?, every object class")).first.wait_for(timeout=60_000)
        page.locator("#current-image").get_by_text("Shapes #1001").wait_for(timeout=30_000)  # the preview may update this line after the panels
        assert not errors, errors
        browser.close()
