"""Each tab's handlers, called as plain functions (no browser, no server): the typed results
and the presenters' Gradio updates."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from demo import build_demo
from demo.core import App
from demo.errors import InputError
from demo.session import PredictionKey, SessionCache
from demo.tabs import compare, instances, losses, pruning, receptive
from segmodels import zoo
from segmodels.bootstrap import against_best
from segmodels.data import SHAPES, render_shapes
from segmodels.losses import focal_curve
from segmodels.metrics import ConfusionMatrix, iou_error_map
from segmodels.receptive_field import theoretical_receptive_field

ALL = ["unet", "unetpp", "unet3p", "deeplabv3p"]
EXAMPLE = "shapes-1000"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning / gr.Info outside a server


@pytest.fixture
def app(tiny_config) -> App:
    return App(tiny_config())


def final(stream):
    """The last update of a streaming callback (running it to the end)."""
    *_, last = stream
    return last


def read(path) -> np.ndarray:
    """An image output (a WebP path) as an array."""
    assert isinstance(path, str), path
    return np.asarray(Image.open(path).convert("RGB"))


def value(update):
    return update["value"] if isinstance(update, dict) else update


def save_png(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def example_image_and_mask(size: int = 64):
    return render_shapes(1000, 0, size)


# --------------------------------------------------------------------------- Compare


def test_compare_tables_one_row_per_model(app):
    result = compare.Compare(app).compare(EXAMPLE, None, None, "shapes", ALL, 4)
    table, per_class = result.table, result.per_class
    assert list(table["Model"]) == list(per_class["Model"]) == ["U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"]
    assert set(table.columns) == {"Model", "Status", "Params (M)", "GFLOPs", "Latency (ms)", "IQR (ms)", "Latency from", "mIoU (this image)", "mIoU (test)",
                                  "Test 95% interval", "Test vs best", "mIoU (card, val set)"}
    assert set(per_class.columns) == {"Model"} | {f"IoU {name}" for name in SHAPES.class_names}  # the wide part, in a table of its own
    assert (table["Status"] == "ok").all()
    assert (table["Params (M)"] > 0).all() and (table["GFLOPs"] > 0).all() and (table["Latency (ms)"] > 0).all()
    assert list(table["mIoU (card, val set)"]) == [0.61, pytest.approx(0.64), 0.63, 0.66]  # U-Net++ L4 from the card's pruning list
    assert list(table["Test vs best"]) == ["-"] * 4 and table["mIoU (test)"].isna().all()  # no test record in these cards: no verdict
    assert result.image.key == EXAMPLE and result.image.label == "Shapes #1000"


def test_compare_judges_models_by_a_paired_bootstrap_on_test(tiny_config, own_zoo):
    from segmodels.bootstrap import paired_difference
    from segmodels.testset import read_per_image, record_test

    for arch in ("unet", "unetpp", "deeplabv3p"):
        record_test(f"shapes/{arch}", None, own_zoo, resamples=200)
    tab = compare.Compare(App(tiny_config(weights_dir=own_zoo)))
    table = tab.compare(EXAMPLE, None, None, "shapes", ALL, 4).table
    tests = {arch: zoo.read_card(f"shapes/{arch}", own_zoo).test_result(None) for arch in ("unet", "unetpp", "deeplabv3p")}
    best = max(tests, key=lambda arch: tests[arch].miou)
    rows = dict(zip(["unet", "unetpp", "unet3p", "deeplabv3p"], table.to_dict("records")))
    assert rows[best]["Test vs best"] == "best on test"
    for arch, test in tests.items():
        assert rows[arch]["mIoU (test)"] == round(test.miou, 4) and rows[arch]["Test 95% interval"] == f"[{test.miou_interval.low:.3f}, {test.miou_interval.high:.3f}]"
        if arch != best:
            assert rows[arch]["Test vs best"].split(" best: ")[0] in ("better than", "worse than", "not distinguishable from")
            assert rows[arch]["Test vs best"].split(" best: ")[1].startswith(f"{test.miou - tests[best].miou:+.3f}")
            paired = paired_difference(read_per_image(f"shapes/{arch}", None, own_zoo), read_per_image(f"shapes/{best}", None, own_zoo), 200, 0)
            assert rows[arch]["Test vs best"].endswith(f"[{paired.low:+.3f}, {paired.high:+.3f}]")  # resampled as the best's card says
    assert rows["unet3p"]["Test vs best"] == "-" and math.isnan(rows["unet3p"]["mIoU (test)"])  # no record: no verdict
    status = compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.8, None)))["status"]
    assert "paired bootstrap" in status and "not seed-to-seed training noise" in status


def test_the_test_standings_are_computed_once_until_a_model_changes(tiny_config, own_zoo, monkeypatch):
    from demo import scores
    from segmodels.testset import record_test

    for arch in ("unet", "unetpp"):
        record_test(f"shapes/{arch}", None, own_zoo, resamples=50)
    tab = compare.Compare(App(tiny_config(weights_dir=own_zoo)))
    computed = []
    monkeypatch.setattr(scores, "against_best", lambda entrants: computed.append(len(entrants)) or against_best(entrants))
    first = [tab.compare(EXAMPLE, None, None, "shapes", ALL, 4).table["Test vs best"].tolist() for _ in range(3)]
    assert computed == [2] and first[0] == first[1] == first[2] and "best on test" in first[0]
    tab.compare(EXAMPLE, None, None, "shapes", ["unet", "unetpp"], 2)
    assert computed == [2, 2]  # another choice of models and depth: computed for it
    record_test("shapes/unet3p", None, own_zoo, resamples=50)  # a model's card replaced
    tab.compare(EXAMPLE, None, None, "shapes", ALL, 4)
    assert computed == [2, 2, 3]


def test_an_unreadable_card_leaves_the_other_models_alone(tiny_config, own_zoo):
    (own_zoo / "shapes" / "unet3p.json").write_text("{not json")
    result = compare.Compare(App(tiny_config(weights_dir=own_zoo))).compare(EXAMPLE, None, None, "shapes", ["unet", "unet3p"], 4)
    assert [run.ok for run in result.runs] == [True, False] and "model card of shapes/unet3p is unreadable" in result.runs[1].error
    assert list(result.table["Test vs best"]) == ["-", "-"]


def test_compare_miou_equals_segmodels_metrics(app, tiny_zoo):
    image, gt, _ = example_image_and_mask()
    result = compare.Compare(app).compare(EXAMPLE, None, None, "shapes", ALL, 2)
    assert np.array_equal(result.image.gt, gt)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for run, row, per_class in zip(result.runs, result.table.itertuples(index=False), result.per_class.itertuples(index=False)):
        model = zoo.load_model(f"shapes/{run.arch}", "cpu", tiny_zoo)
        with torch.inference_mode():
            expected_labels = model(x, **({"depth": run.depth} if run.depth else {})).argmax(1)[0].numpy()
        assert (run.labels == expected_labels).mean() > 0.999  # batch-norm folding may flip a near-tie, nothing more
        matrix = ConfusionMatrix(SHAPES.num_classes, SHAPES.ignore_index)
        matrix.update(torch.from_numpy(run.labels.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
        metrics = matrix.compute()
        assert row[result.table.columns.get_loc("mIoU (this image)")] == pytest.approx(metrics["miou"], abs=1e-4)
        for c in range(SHAPES.num_classes):
            shown = per_class[1 + c]
            assert (math.isnan(shown) and math.isnan(metrics["per_class_iou"][c])) or shown == pytest.approx(metrics["per_class_iou"][c], abs=1e-4)


def test_compare_streams_each_mask_then_everything(app):
    tab = compare.Compare(app)
    first, after_unet, after_deeplab, last = (compare.VIEW.named(out) for out in tab.stream(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, 0.5, None))
    assert "running U-Net (1 of 2)" in first["status"] and "circle" in first["legend"] and "Shapes #1000" in first["current"]
    assert read(first["image"]).shape == read(first["truth"]).shape == (64, 64, 3)
    slots = [first[f"mask_{a}"] for a in ALL]  # stale masks are cleared at once; the two chosen slots wait, the others hide
    assert [slot["visible"] for slot in slots] == [True, False, False, True] and all(slot["value"] is None for slot in slots)
    assert slots[0]["label"] == "U-Net" and slots[3]["label"] == "DeepLabV3+"  # named at once: each mask then comes as a plain value
    assert first["table"]["value"].values.tolist() == [["U-Net", "waiting…"], ["DeepLabV3+", "waiting…"]]
    assert isinstance(after_unet["mask_unet"], str) and all(after_unet[f"mask_{a}"] == gr.skip() for a in ALL[1:])
    assert value(after_deeplab["mask_deeplabv3p"]) is not None and after_deeplab["mask_unet"] == gr.skip()
    # The last update is complete (API clients): plain values, images as WebP files.
    assert last["mask_unet"] == value(after_unet["mask_unet"]) and last["mask_unetpp"] is None
    assert "2 of 2 models ran" in last["status"] and "(PyTorch), one forward pass each" in last["status"]  # nothing benchmarked yet: no ONNX session and "Latency = median" in last["status"]
    assert isinstance(last["table"], pd.DataFrame) and len(last["table"]) == 2
    assert "data-label='GFLOPs'" in last["table_page"] and last["table_page"].count("<tr>") == 3  # the page's table: a header and a row per model
    again = compare.VIEW.named(next(tab.stream(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, 0.5, None)))
    assert "sharing the mask of U-Net (1 of 2), computed for an earlier request" in again["status"] and "running" not in again["status"]  # nothing runs: said so
    assert len(last["scatter"]["value"].data) == 2 and len(last["bars"]["value"].data) == 2  # one trace per model in each
    session = last["session"]
    assert isinstance(session, SessionCache) and set(session.predictions) == {PredictionKey("unet", None), PredictionKey("deeplabv3p", None)}
    # Opacity only redraws from the session: nothing runs.
    redrawn = compare.RESTYLE.named(tab.restyle(EXAMPLE, None, None, "shapes", 4, 1.0, session))
    assert np.abs(read(redrawn["mask_unet"]).astype(int) - SHAPES.colorize(session.predictions[PredictionKey("unet", None)])).mean() < 3  # WebP, quality 90
    assert redrawn["mask_unetpp"] == gr.skip()


def test_two_lanes_run_two_models_at_once_with_the_same_masks_in_the_same_order(app, tiny_config, monkeypatch):
    two = App(tiny_config(torch_threads=2))
    assert two.engine.lanes == two.scheduler.lanes == 2 and two.engine.predictor.pass_threads == 1
    running, most = [0], [0]
    labels = two.engine.predictor.runtime.labels

    def counted(*args):
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # long enough for the other lane to start
            return labels(*args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(two.engine.predictor.runtime, "labels", counted)
    first = compare.VIEW.named(next(compare.Compare(two).stream(EXAMPLE, None, None, "shapes", ["unet", "unetpp", "deeplabv3p"], 4, 0.5, None)))
    assert first["status"].endswith(": running U-Net (1 of 3) and U-Net++ (2 of 3)…")  # both lanes named
    image = render_shapes(1001, 0, 64)[0]
    one_lane, two_lanes = list(app.engine.run_models("shapes", ALL, image, 4)), list(two.engine.run_models("shapes", ALL, image, 4))
    assert [run.arch for run in two_lanes] == ALL and most[0] == 2
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(one_lane, two_lanes))


def test_a_result_for_another_image_is_dropped(app):
    """The page moves on to another image while the models run: the rest of the run is not
    shown, and the status says why."""
    controls_session = SessionCache()
    from demo.controls import PREVIEW, Controls

    controls = Controls(app)
    assert PREVIEW.named(controls.preview(EXAMPLE, None, None, "shapes", controls_session))["image_changed"] == f"shapes/{EXAMPLE}"
    stream = compare.Compare(app).stream(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, 0.5, controls_session)
    first = compare.VIEW.named(next(stream))
    assert "Shapes #1000" in first["current"]
    controls.preview("shapes-1001", None, None, "shapes", controls_session)  # a thumbnail is tapped
    rest = [compare.VIEW.named(out) for out in stream]
    assert len(rest) == 1 and "Stopped: the image changed" in rest[0]["status"]
    assert all(value == gr.skip() for name, value in rest[0].items() if name != "status")
    # A run that started after the change is not stopped by it, and the new image's late
    # "image changed" event keeps its results while another image's clears them.
    last = compare.VIEW.named(final(compare.Compare(app).stream("shapes-1001", None, None, "shapes", ["unet"], 4, 0.5, controls_session)))
    assert "1 of 1 models ran" in last["status"] and "Shapes #1001" in last["current"]
    kept = compare.SHOWN.named(compare.Compare(app).show_image("shapes-1001", None, None, "shapes", 0.5, "shapes/shapes-1001", controls_session))
    assert kept["mask_unet"] == gr.skip() and kept["table"] == gr.skip() and kept["status"] == gr.skip()
    cleared = compare.SHOWN.named(compare.Compare(app).show_image("shapes-1002", None, None, "shapes", 0.5, "shapes/shapes-1002", controls_session))
    assert cleared["mask_unet"]["visible"] is False and cleared["table"]["visible"] is False and "Press **Run the models**" in cleared["status"]


def test_a_click_is_checked_once_from_its_queue_note_to_its_run(app, monkeypatch):
    """The queue note's parsed request is carried to the run that follows it; a run without
    one (an API call), or with other inputs, parses its own."""
    tab = compare.Compare(app)
    session = SessionCache()
    checks = []
    original = app.check.models
    monkeypatch.setattr(app.check, "models", lambda *args: checks.append(args) or original(*args))
    inputs = (EXAMPLE, None, None, "shapes", ["unet"], 4, 0.5)
    assert tab.queue_note(*inputs, session) == "Starting…" and len(checks) == 1
    assert "1 of 1 models ran" in compare.VIEW.named(final(tab.stream(*inputs, session)))["status"] and len(checks) == 1
    final(tab.stream(*inputs, session))
    assert len(checks) == 2
    tab.queue_note(*inputs, session)
    final(tab.stream(*inputs[:-1], 0.6, session))
    assert len(checks) == 4


def test_a_compare_click_reads_the_cards_once_and_takes_one_handle_per_model(tiny_config, own_zoo, monkeypatch):
    """A Compare click of four models: the set's cards are read once per change of their files
    (none when nothing changed; only the changed one, by the catalogue and by the model's
    reload, when one changed) and each model is handed out once."""
    app = App(tiny_config(weights_dir=own_zoo))
    tab, session = compare.Compare(app), SessionCache()
    inputs = (EXAMPLE, None, None, "shapes", ALL, 4, 0.5)
    final(tab.stream(*inputs, session))  # the models loaded, the cards read
    reads, handles = [], []
    original_read, original_model = zoo.read_card, app.engine.model
    monkeypatch.setattr(zoo, "read_card", lambda name, *args, **kwargs: reads.append(name) or original_read(name, *args, **kwargs))
    monkeypatch.setattr(app.engine, "model", lambda set_name, arch: handles.append(arch) or original_model(set_name, arch))

    def click(example: str) -> dict:
        reads.clear()
        handles.clear()
        tab.queue_note(example, *inputs[1:], session)
        return compare.VIEW.named(final(tab.stream(example, *inputs[1:], session)))

    assert "4 of 4 models ran" in click("shapes-1001")["status"]
    assert reads == [] and sorted(handles) == sorted(ALL)
    card = own_zoo / "shapes" / "unet3p.json"
    card.write_text(card.read_text())  # the same card written again: a new file
    assert "4 of 4 models ran" in click("shapes-1002")["status"]
    assert set(reads) == {"shapes/unet3p"} and sorted(handles) == sorted(ALL)


def test_compare_never_reloads_weights_and_a_click_decodes_once(tiny_config, own_zoo, monkeypatch):
    import demo.request_images

    app = App(tiny_config(weights_dir=own_zoo))
    loads, tensors, decodes = [], [], []
    original_load, original_tensor, original_example = zoo.load_state_dict_checked, app.engine.predictor.to_tensor, demo.request_images.load_example
    monkeypatch.setattr(zoo, "load_state_dict_checked", lambda *a, **k: loads.append(a) or original_load(*a, **k))
    monkeypatch.setattr(app.engine.predictor, "to_tensor", lambda image: tensors.append(image.shape) or original_tensor(image))
    monkeypatch.setattr(demo.request_images, "load_example", lambda *a, **k: decodes.append(a) or original_example(*a, **k))
    from demo.controls import Controls

    # One click: the preview and every tab that shows the new image share one decoding.
    Controls(app).preview(EXAMPLE, None, None, "shapes", SessionCache())
    compare.Compare(app).show_image(EXAMPLE, None, None, "shapes", 0.5, f"shapes/{EXAMPLE}", SessionCache())
    receptive.Receptive(app).show_image(EXAMPLE, None, None, "shapes", f"shapes/{EXAMPLE}", SessionCache())
    final(compare.Compare(app).stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))
    assert len(decodes) == 1 and len(loads) == 4 and len(tensors) == 1  # four models, one tensor
    compare.Compare(app).compare("shapes-1001", None, None, "shapes", ALL, 2)
    assert len(loads) == 4 and len(tensors) == 2 and len(decodes) == 2  # a new request reuses the cached models


def test_upload_with_mask_scores_against_it(app, tmp_path):
    image, mask, _ = example_image_and_mask()
    tab = compare.Compare(app)
    result = tab.compare(None, save_png(tmp_path / "img.png", image), save_png(tmp_path / "mask.png", mask), "shapes", ["unet"], 4)
    assert np.array_equal(result.image.gt, mask) and result.image.key.startswith("upload-") and "-mask-" in result.image.key
    assert not math.isnan(result.table["mIoU (this image)"].item())
    result = tab.compare(None, str(tmp_path / "img.png"), None, "shapes", ["unet"], 4)  # no mask: the card's score remains
    assert math.isnan(result.table["mIoU (this image)"].item()) and result.table["mIoU (card, val set)"].item() == 0.61
    assert result.per_class_source == "validation set, from the model cards" and result.per_class["IoU background"].item() == 0.61


# --------------------------------------------------------------------------- U-Net++ pruning


def test_pruning_rows_for_every_declared_depth(app):
    tab = pruning.Pruning(app)
    result = tab.result(EXAMPLE, None, None, "shapes")
    assert result.arch == "unetpp" and result.depths == app.engine.pruning_depths("shapes", "unetpp")
    table = result.table
    assert list(table["Depth"]) == ["L1", "L2", "L3", "L4"]
    params = table["Params (M)"].tolist()
    assert all(a < b for a, b in zip(params, params[1:])), params
    assert (table["Latency (ms)"] > 0).all() and table["mIoU (this image)"].notna().all()
    assert table["mIoU (card, val set)"].tolist() == pytest.approx([0.46, 0.52, 0.58, 0.64])
    steps = [tab.view.named(out) for out in tab.stream(EXAMPLE, None, None, "shapes", 0.5, None)]
    assert len(steps) == 5 and "L1 to L2 done" in steps[1]["status"] and steps[1]["depth_2"]["label"] == "U-Net++ L3: waiting…"
    out = steps[-1]
    assert "L1 to L4" in out["status"] and len(out["plot"]["value"].data) == 2 and "Latency from" in out["table"]["value"]


def test_pruning_without_a_prunable_model_says_so(app, monkeypatch):
    monkeypatch.setattr(app.choices, "pruning_depths", lambda set_name, arch: ())
    tab = pruning.Pruning(app)
    out = tab.view.named(final(tab.stream(EXAMPLE, None, None, "shapes", 0.5, None)))
    assert "ships no model that can be pruned" in out["status"] and "inline-error" in out["status"]


# --------------------------------------------------------------------------- receptive fields


def test_receptive_field_rows_per_layer_and_growing(app, tiny_zoo):
    tab = receptive.Receptive(app)
    table = tab.table("shapes", ["unet"], 4)
    model = zoo.load_model("shapes/unet", "cpu", tiny_zoo)
    assert len(table) == len(theoretical_receptive_field(model, (64, 64)))
    sizes = table["Receptive field (px)"].to_numpy()
    assert sizes[0] == 3  # the first 3x3 convolution
    encoder = table.loc[table["Module"].str.startswith("encoder"), "Receptive field (px)"].to_numpy()
    assert len(encoder) > 5 and (np.diff(encoder) > 0).all()  # strictly growing down the encoder
    assert sizes.max() > 100
    out = receptive.CHARTS.named(tab.charts("shapes", ALL, 4))
    assert {trace.name for trace in out["chart"].data} == {"U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"}
    assert "whole image" in set(out["table"].loc[out["table"]["Model"] == "DeepLabV3+", "Receptive field (px)"])  # ASPP image pooling
    assert [a.text.split("<br>")[0] for a in out["dilation"].layout.annotations] == ["rate 1", "rate 2", "rate 6 (ASPP)", "rate 12 (ASPP)", "rate 18 (ASPP)"]
    assert "ASPP rates 6, 12, 18 at output stride 16" in out["summary"] and "SPP bins 1x1, 2x2, 4x4" in out["summary"]


def test_effective_receptive_field_of_a_clicked_pixel(app):
    tab = receptive.Receptive(app)
    shown = receptive.SHOWN.named(tab.show_image(EXAMPLE, None, None, "shapes", f"shapes/{EXAMPLE}", None))
    clickable = read(shown["click"]["value"])
    scale = clickable.shape[0] // 64
    assert clickable.shape == (64 * scale, 64 * scale, 3) and scale == 5 and "Shapes #1000" in shown["click"]["label"]
    evt = SimpleNamespace(index=[20 * scale + 2, 10 * scale + 1])  # gr.SelectData.index is (x, y) on the shown image
    out = receptive.CLICKED.named(tab.clicked(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, None, evt))
    assert out["field_unet"]["visible"] and out["field_unet"]["value"] and out["field_deeplabv3p"]["visible"] and not out["field_unetpp"]["visible"]
    assert read(out["pooling"]["value"]).ndim == 3 and "row 10, column 20" in out["note"] and "Shapes #1000" in out["note"]
    assert "ASPP rate 6: taps 96 px apart" in out["pooling_note"]
    current = app.images.current(EXAMPLE, None, None, "shapes")
    fields = tab.effective_fields(current, ["unet"], 4, (500, -3))  # clamped into the image
    assert fields.pixel == (63, 0) and fields.overlays["unet"].shape == (64, 64, 3)
    # A click on an image the page no longer shows is refused, not answered with another image's fields.
    session = SessionCache(shown="shapes/shapes-1001")
    out = receptive.CLICKED.named(tab.clicked(EXAMPLE, None, None, "shapes", ["unet"], 4, session, evt))
    assert "The image changed" in out["note"] and out["field_unet"] == gr.skip()


# --------------------------------------------------------------------------- losses and IoU


def test_class_weights_on_a_hand_made_mask(app, tmp_path):
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:2] = 1  # 20 circle pixels
    mask[2, :] = 2  # 10 triangle pixels; 70 background, no rectangle
    table = losses.class_weight_table(mask, SHAPES)
    assert table["Pixels N_c"].tolist() == [70, 20, 10, 0]
    assert table["Weight w_c"].tolist() == pytest.approx([(100 - 70) / 100, (100 - 20) / 100, (100 - 10) / 100, 1.0])
    # One image: freq_c is the share, median over the present classes 0.2; absent classes get 0.
    assert table["Median-frequency weight"].tolist() == pytest.approx([0.2 / 0.7, 1.0, 2.0, 0.0], abs=1e-4)
    image = np.full((10, 10, 3), 128, dtype=np.uint8)
    out = losses.WEIGHTS.named(losses.Losses(app).weights(None, save_png(tmp_path / "i.png", image), save_png(tmp_path / "m.png", mask), "shapes", None))
    assert out["table"]["value"]["Weight w_c"].tolist() == pytest.approx([0.3, 0.8, 0.9, 1.0]) and "N = 100" in out["note"]


def test_class_weights_of_an_upload_without_mask_use_a_prediction(app, tmp_path):
    path = save_png(tmp_path / "photo.png", example_image_and_mask()[0])
    tab = losses.Losses(app)
    out = losses.WEIGHTS.named(tab.weights(None, path, None, "shapes", SessionCache()))
    assert "no ground-truth mask" in out["note"] and "inline-error" in out["note"] and out["table"]["visible"] is False
    session = compare.VIEW.named(final(compare.Compare(app).stream(None, path, None, "shapes", ["unet3p", "unet"], 4, 0.5, None)))["session"]
    out = losses.WEIGHTS.named(tab.weights(None, path, None, "shapes", session))
    assert "predicted by U-Net (no ground truth" in out["note"] and out["table"]["value"]["Pixels N_c"].sum() == 64 * 64


def test_loss_curves_follow_gamma():
    figure = losses.Losses.curves(3.0)
    ce, focal = figure.data[0], figure.data[1]
    p = np.asarray(focal.x)
    assert np.allclose(np.asarray(ce.y), -np.log(p)) and np.allclose(np.asarray(focal.y), focal_curve(p, 3.0))
    subtitle = figure.layout.title.subtitle.text.replace("<br>", " ")
    assert "penalises well-classified pixels" in subtitle and "0.001 x cross-entropy" in subtitle  # (1 - 0.9)^3
    assert "exactly the cross-entropy" in losses.Losses.curves(0).layout.title.subtitle.text.replace("<br>", " ")  # no claim that gamma 0 spares easy pixels


def test_iou_map_counts_match_the_table(app):
    last = compare.VIEW.named(final(compare.Compare(app).stream(EXAMPLE, None, None, "shapes", ["unet"], 4, 0.5, None)))
    session, per_class = last["session"], last["per_class"]["value"]
    tab = losses.Losses(app)
    result = tab.iou_map(app.images.current(EXAMPLE, None, None, "shapes"), "unet", "background", 4, session)
    _, gt, _ = example_image_and_mask()
    codes = iou_error_map(session.predictions[PredictionKey("unet", None)], gt, 0)
    assert (result.tp, result.fp, result.fn) == (int((codes == 1).sum()), int((codes == 2).sum()), int((codes == 3).sum()))
    assert result.iou == pytest.approx(per_class["IoU background"].item(), abs=1e-4)
    out = losses.IOU.named(tab.iou(EXAMPLE, None, None, "shapes", "unet", "background", 4, None))  # runs the model itself
    assert read(out["map"]["value"]).shape == (64, 64, 3) and ("TP / (TP + FP + FN)" in out["note"] or "undefined" in out["note"])
    assert set(out["session"].predictions) == {PredictionKey("unet", None)}


def test_iou_map_needs_ground_truth_and_a_known_class(app, tmp_path):
    path = save_png(tmp_path / "photo.png", example_image_and_mask()[0])
    tab = losses.Losses(app)
    assert "needs a ground-truth mask" in losses.IOU.named(tab.iou(None, path, None, "shapes", "unet", "circle", 4, None))["note"]
    assert "Unknown class 'nonsense'" in losses.IOU.named(tab.iou(EXAMPLE, None, None, "shapes", "unet", "nonsense", 4, None))["note"]


# --------------------------------------------------------------------------- semantic vs instance


def test_instances_from_shapes_ground_truth(app):
    _, _, truth = example_image_and_mask()
    result = instances.InstancesTab(app).instances(app.images.current(EXAMPLE, None, None, "shapes"), "unet", "all classes", 4, SessionCache())
    assert result.truth_count == len(np.unique(truth[truth > 0])) and "Ground truth" in result.note
    assert result.predicted is None and "ships no instance model" in result.note  # the tiny zoo has none
    out = instances.VIEW.named(instances.InstancesTab(app).show(EXAMPLE, None, None, "shapes", "unet", "all classes", 4, None))
    assert read(out["classes"]["value"]).shape == read(out["components"]["value"]).shape == read(out["truth"]["value"]).shape == (64, 64, 3)
    assert out["predicted"]["visible"] is False


def test_instances_as_connected_components_without_ground_truth(app, tmp_path):
    path = save_png(tmp_path / "photo.png", example_image_and_mask()[0])
    session = SessionCache()
    result = instances.InstancesTab(app).instances(app.images.current(None, path, None, "shapes"), "unet", "background", 4, session)
    labels = session.predictions[PredictionKey("unet", None)]
    assert result.truth is None and result.component_count == ndimage.label(labels == 0)[1]
    assert "connected components" in result.note and "Ground truth" not in result.note


# --------------------------------------------------------------------------- bad inputs


def test_bad_image_is_a_clear_error(app, tmp_path):
    tab = compare.Compare(app)
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"%PDF-1.7 definitely not an image")
    with pytest.raises(gr.Error, match="not a supported image") as info:
        final(tab.stream(None, str(bad), None, "shapes", ALL, 4, 0.5, None))
    assert "Traceback" not in str(info.value) and info.value.duration is None  # the message stays until it is closed
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="empty file"):
        final(tab.stream(None, str(empty), None, "shapes", ALL, 4, 0.5, None))
    whole = tmp_path / "whole.png"
    save_png(whole, example_image_and_mask()[0])
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(gr.Error, match="truncated or corrupt"):
        final(tab.stream(None, str(truncated), None, "shapes", ALL, 4, 0.5, None))


def test_wrong_size_or_values_mask_is_a_clear_error(app, tmp_path):
    image, mask, _ = example_image_and_mask()
    path = save_png(tmp_path / "img.png", image)
    tab = compare.Compare(app)
    with pytest.raises(gr.Error, match=r"mask is 32x32 but the image is 64x64"):
        final(tab.stream(None, path, save_png(tmp_path / "small.png", mask[:32, :32]), "shapes", ALL, 4, 0.5, None))
    wrong = mask.copy()
    wrong[0, 0] = 9
    with pytest.raises(gr.Error, match="not class ids.*Allowed: class ids 0-3"):
        final(tab.stream(None, path, save_png(tmp_path / "wrong.png", wrong), "shapes", ALL, 4, 0.5, None))
    with pytest.raises(gr.Error, match="without its image"):
        final(tab.stream(EXAMPLE, None, str(tmp_path / "wrong.png"), "shapes", ALL, 4, 0.5, None))


def test_other_bad_requests(app):
    tab = compare.Compare(app)
    assert "Choose at least one model" in tab.queue_note(EXAMPLE, None, None, "shapes", [], 4, 0.5)  # said at once, beside the button
    assert tab.queue_note(EXAMPLE, None, None, "shapes", ["unet"], 4, 0.5) == "Starting…"
    for request, message in [((EXAMPLE, None, None, "shapes", [], 4), "at least one model"), ((EXAMPLE, None, None, "camvid", ALL, 4), "Unknown model set"),
                             (("../../etc/passwd", None, None, "shapes", ALL, 4), "Unknown example"), ((EXAMPLE, None, None, "shapes", ALL, 9), "depth")]:
        with pytest.raises(gr.Error, match=message):
            final(tab.stream(*request, 0.5, None))


@pytest.mark.parametrize("models, message", [
    (["unet"] * 500_000, None),  # duplicates are removed first: one model
    ([f"model{i}" for i in range(500_000)], "At most 4 different models"),
    ([1, 2], "list of names"),
])
def test_huge_or_odd_model_lists_are_answered_at_once(app, models, message, monkeypatch):
    """Refused before any lookup of the shipped models, or looked up once for the one model. The
    duration bound is generous on purpose (a loaded CI machine): it only catches work that grows
    with the square of the list (500,000 names: about 10^11 steps), which would take hours."""
    archs, lookups = app.choices.archs, []
    monkeypatch.setattr(app.choices, "archs", lambda set_name: lookups.append(set_name) or archs(set_name))
    started = time.perf_counter()
    if message is None:
        assert app.check.models("shapes", models) == ["unet"] and lookups == ["shapes"]
    else:
        with pytest.raises(InputError, match=message):
            app.check.models("shapes", models)
        assert lookups == []
    assert time.perf_counter() - started < 30


def test_long_strings_and_nan_are_refused_without_echo(app):
    tab = compare.Compare(app)
    huge = "x" * 50_000_000
    for request in ((huge, None, None, "shapes"), (EXAMPLE, None, None, huge)):
        with pytest.raises(gr.Error) as info:
            final(tab.stream(*request, ["unet"], 4, 0.5, None))
        assert len(str(info.value)) < 400 and "50,000,000 characters" in str(info.value)
    for opacity in (float("nan"), 2.0, "abc"):
        with pytest.raises(gr.Error, match="opacity"):
            final(tab.stream(EXAMPLE, None, None, "shapes", ["unet"], 4, opacity, None))
    with pytest.raises(gr.Error, match="depth"):
        final(tab.stream(EXAMPLE, None, None, "shapes", ["unet"], float("nan"), 0.5, None))


def test_no_weights_installed(tiny_config, tmp_path):
    demo = build_demo(tiny_config(weights_dir=tmp_path / "empty"))
    with pytest.raises(gr.Error, match="No trained models are installed"):
        final(compare.Compare(demo.dashboard).stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))


def test_corrupted_weights_are_reported_and_the_others_run(tiny_config, own_zoo):
    (own_zoo / "shapes" / "unet3p.pt").write_bytes(b"garbage" * 100)
    (own_zoo / "shapes" / "unet.pt").unlink()
    tab = compare.Compare(App(tiny_config(weights_dir=own_zoo)))
    out = compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None)))
    table = out["table"]
    assert len(table) == 4
    status = dict(zip(table["Model"], table["Status"]))
    assert status == {"U-Net": "failed (see above)", "U-Net++ L4": "ok", "U-Net 3+": "failed (see above)", "DeepLabV3+": "ok"}
    assert "corrupted or was swapped" in out["status"] and "missing" in out["status"]  # the reasons stay on screen, in the status
    assert table.loc[table["Status"] == "ok", "Latency (ms)"].notna().all()
    with pytest.raises(gr.Error, match="No model could run"):  # every model broken: a clear error, not an empty result
        final(tab.stream(EXAMPLE, None, None, "shapes", ["unet", "unet3p"], 4, 0.5, None))


def test_out_of_memory_is_reported_and_the_next_request_works(app, monkeypatch):
    model = app.engine.model("shapes", "unetpp")
    calls = {"n": 0}
    original = model.forward

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(*args, **kwargs)

    emptied = []
    monkeypatch.setattr(model, "forward", fails_once)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    tab = compare.Compare(app)
    with pytest.raises(gr.Error, match="ran out of memory") as info:
        final(tab.stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))
    assert "fewer models or a smaller image" in str(info.value) and emptied
    assert (compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None)))["table"]["Status"] == "ok").all()


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 1000, 3), (40, 30), (20, 20, 4)])
def test_odd_image_shapes_and_modes(app, tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    path = save_png(tmp_path / "odd.png", array)
    result = compare.Compare(app).compare(None, path, None, "shapes", ALL, 4)
    assert (result.table["Status"] == "ok").all() and max(result.image.size) <= app.config.max_side
    fields = receptive.Receptive(app).effective_fields(result.image, ["deeplabv3p"], 4, (0, 0))
    assert fields.overlays["deeplabv3p"].shape[:2] == result.image.size and fields.pooling.shape[1] < 5000


def test_the_models_of_a_comparison_are_timed_together(app):
    tab = compare.Compare(app)
    first = tab.compare(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4)
    assert all(origin.startswith("⚠ 1 pass") for origin in first.table["Latency from"])  # until the benchmark ran
    app.engine.benchmarker.run_pending()
    again = tab.compare(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4)
    assert all("timed together ×" in origin for origin in again.table["Latency from"]), list(again.table["Latency from"])
    assert list(again.table.columns).index("GFLOPs") == list(again.table.columns).index("IQR (ms)") + 1  # the machine-independent cost beside the latency
    alone = tab.compare(EXAMPLE, None, None, "shapes", ["unet", "unet3p"], 4)  # another pair: U-Net's figure came from other rounds
    assert alone.table["Latency from"][0].startswith("⚠ ") and "timed apart" in alone.table["Latency from"][0]
