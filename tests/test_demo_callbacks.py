"""The dashboard's callbacks, called as plain functions (no browser, no server)."""

from __future__ import annotations

import inspect
import math
import shutil
import time
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from demo import build_demo, launch_kwargs
from demo.callbacks import Dashboard
from demo.sources import InputError
from demo.config import ASSETS_DIR
from segmodels import zoo
from segmodels.data import SHAPES, render_shapes
from segmodels.losses import focal_curve
from segmodels.metrics import ConfusionMatrix, iou_error_map
from segmodels.receptive_field import theoretical_receptive_field

ALL = ["unet", "unetpp", "unet3p", "deeplabv3p"]
EXAMPLE = "shapes-1000"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a server is a UserWarning


@pytest.fixture
def app(tiny_config) -> Dashboard:
    return Dashboard(tiny_config())


@pytest.fixture
def own_zoo(tiny_zoo, tmp_path):
    """A private copy of the tiny zoo (its own cache entries; safe to damage)."""
    target = tmp_path / "weights"
    shutil.copytree(tiny_zoo, target)
    return target


def final(stream):
    """The last update of a streaming callback (running it to the end)."""
    *_, last = stream
    return last


def save_png(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def example_image_and_mask(size: int = 64):
    image, mask, instances = render_shapes(1000, 0, size)
    return image, mask, instances


# --------------------------------------------------------------------------- Compare


def test_compare_table_has_one_row_per_model_and_all_columns(app):
    result = app.compare_result(EXAMPLE, None, None, "shapes", ALL, 4)
    table = result.table
    assert list(table["Model"]) == ["U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"]
    expected = {"Model", "Status", "Params (M)", "GFLOPs", "Latency (ms)", "Latency IQR (ms)", "mIoU (this image)", "mIoU (card, val set)"}
    expected |= {f"IoU {name}" for name in SHAPES.class_names}
    assert expected <= set(table.columns)
    assert (table["Status"] == "ok").all()
    assert (table["Params (M)"] > 0).all() and (table["GFLOPs"] > 0).all() and (table["Latency (ms)"] > 0).all()
    # The card's dataset mIoU (U-Net++ at depth 4 comes from the card's pruning list).
    assert list(table["mIoU (card, val set)"]) == [0.61, pytest.approx(0.64), 0.63, 0.66]


def test_compare_miou_equals_segmodels_metrics(app, tiny_zoo):
    image, gt, _ = example_image_and_mask()
    result = app.compare_result(EXAMPLE, None, None, "shapes", ALL, 2)
    assert np.array_equal(result.gt, gt)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    for run, row in zip(result.runs, result.table.itertuples(index=False)):
        model = zoo.load_model(f"shapes/{run.arch}", "cpu", tiny_zoo)
        with torch.inference_mode():
            expected_labels = model(x, **({"depth": run.depth} if run.depth else {})).argmax(1)[0].numpy()
        # Batch-norm folding may flip a near-tie of an untrained model's logits, nothing more.
        assert (run.labels == expected_labels).mean() > 0.999
        matrix = ConfusionMatrix(SHAPES.num_classes, SHAPES.ignore_index)
        matrix.update(torch.from_numpy(run.labels.astype(np.int64)), torch.from_numpy(gt.astype(np.int64)))
        metrics = matrix.compute()
        assert row[result.table.columns.get_loc("mIoU (this image)")] == pytest.approx(metrics["miou"], abs=1e-4)
        for c, name in enumerate(SHAPES.class_names):
            value = result.table.loc[result.table["Model"] == run.name, f"IoU {name}"].item()
            assert (math.isnan(value) and math.isnan(metrics["per_class_iou"][c])) or value == pytest.approx(metrics["per_class_iou"][c], abs=1e-4)


def test_compare_streams_each_mask_then_the_table(app):
    first, after_unet, after_deeplab, last = app.compare(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, 0.5, None)
    status, legend, image, gt_overlay, *slots = first[:8]
    assert "running U-Net (1 of 2)" in status and "circle" in legend
    assert image.shape == gt_overlay.shape == (64, 64, 3)
    # Stale masks are cleared at once; the two chosen slots wait, the others hide.
    assert [slot["visible"] for slot in slots] == [True, False, False, True] and all(slot["value"] is None for slot in slots)
    assert first[8]["value"].values.tolist() == [["U-Net", "waiting…"], ["DeepLabV3+", "waiting…"]]  # the old table is gone
    assert after_unet[4]["value"] is not None and all(slot == gr.skip() for slot in after_unet[5:8])
    assert after_deeplab[7]["value"] is not None and after_deeplab[4] == gr.skip()
    status, *_ = last
    table, scatter, bars, session = last[8:]
    assert np.array_equal(last[4], after_unet[4]["value"]) and last[5] is None  # the final update is complete (API clients)
    assert "2 of 2 models ran" in status and "one forward pass each" in status
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    assert len(scatter.data) == 4 and len(bars.data) == 2  # this image + card point per model; one bar set per model
    assert session["key"] == EXAMPLE and set(session["predictions"]) == {"unet@0", "deeplabv3p@0"}
    # Opacity only redraws from the session: nothing runs.
    redrawn = app.restyle(EXAMPLE, None, None, "shapes", 1.0, session)
    assert np.array_equal(redrawn[1], SHAPES.colorize(session["predictions"]["unet@0"]))


def test_compare_decodes_once_and_never_reloads_weights(tiny_config, own_zoo, monkeypatch):
    app = Dashboard(tiny_config(weights_dir=own_zoo))
    loads, tensors = [], []
    original_load, original_tensor = zoo.load_state_dict_checked, app.engine.predictor.to_tensor
    monkeypatch.setattr(zoo, "load_state_dict_checked", lambda *a, **k: loads.append(a) or original_load(*a, **k))
    monkeypatch.setattr(app.engine.predictor, "to_tensor", lambda image: tensors.append(image.shape) or original_tensor(image))
    app.compare_result(EXAMPLE, None, None, "shapes", ALL, 4)
    assert len(loads) == 4 and len(tensors) == 1  # four models, one tensor
    app.compare_result("shapes-1001", None, None, "shapes", ALL, 2)
    assert len(loads) == 4 and len(tensors) == 2  # a new request reuses the cached models


def test_upload_with_mask_scores_against_it(app, tmp_path):
    image, mask, _ = example_image_and_mask()
    result = app.compare_result(None, save_png(tmp_path / "img.png", image), save_png(tmp_path / "mask.png", mask), "shapes", ["unet"], 4)
    assert np.array_equal(result.gt, mask)
    assert not math.isnan(result.table["mIoU (this image)"].item())
    # Without a mask: no score on the image, the card's score remains.
    result = app.compare_result(None, str(tmp_path / "img.png"), None, "shapes", ["unet"], 4)
    assert math.isnan(result.table["mIoU (this image)"].item()) and result.table["mIoU (card, val set)"].item() == 0.61


# --------------------------------------------------------------------------- U-Net++ pruning


def test_pruning_rows_for_every_depth(app):
    result = app.pruning_result(EXAMPLE, None, None, "shapes")
    table = result.table
    assert list(table["Depth"]) == ["L1", "L2", "L3", "L4"]
    params = table["Params (M)"].tolist()
    assert all(a < b for a, b in zip(params, params[1:])), params
    assert (table["Latency (ms)"] > 0).all() and table["mIoU (this image)"].notna().all()
    assert table["mIoU (card, val set)"].tolist() == pytest.approx([0.46, 0.52, 0.58, 0.64])
    out = final(app.pruning(EXAMPLE, None, None, "shapes", 0.5))
    assert "L1 to L4" in out[0] and len(out) == 7 and len(out[6].data) == 2 and "Latency from" in out[5]


# --------------------------------------------------------------------------- receptive fields


def test_receptive_field_rows_per_layer_and_growing(app, tiny_zoo):
    table = app.receptive_field_table("shapes", ["unet"], 4)
    model = zoo.load_model("shapes/unet", "cpu", tiny_zoo)
    assert len(table) == len(theoretical_receptive_field(model, (64, 64)))
    sizes = table["Receptive field (px)"].to_numpy()
    assert sizes[0] == 3  # the first 3x3 convolution
    encoder = table.loc[table["Module"].str.startswith("encoder"), "Receptive field (px)"].to_numpy()
    assert len(encoder) > 5 and (np.diff(encoder) > 0).all()  # strictly growing down the encoder
    assert sizes.max() > 100

    figure, display, dilation, summary = app.receptive_fields("shapes", ALL, 4)
    assert {trace.name for trace in figure.data} == {"U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"}
    assert "whole image" in set(display.loc[display["Model"] == "DeepLabV3+", "Receptive field (px)"])  # ASPP image pooling
    assert [a.text.split(":")[0] for a in dilation.layout.annotations] == ["rate 1", "rate 2", "rate 6 (ASPP)", "rate 12 (ASPP)", "rate 18 (ASPP)"]
    assert "ASPP rates 6, 12, 18 at output stride 16" in summary and "SPP bins 1x1, 2x2, 4x4" in summary


def test_effective_receptive_field_of_a_clicked_pixel(app):
    clickable = app.preview(EXAMPLE, None, None, "shapes", 0.5)[3]
    scale = clickable.shape[0] // 64
    assert clickable.shape == (64 * scale, 64 * scale, 3) and scale == 5  # a 64 px example is shown 5x larger
    evt = SimpleNamespace(index=[20 * scale + 2, 10 * scale + 1])  # gr.SelectData.index is (x, y) on the shown image
    out = app.effective_fields(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, evt)
    slots, pooling, note = out[:4], out[4], out[5]
    assert slots[0]["visible"] and slots[0]["value"] is not None and slots[3]["visible"] and not slots[1]["visible"]
    assert pooling.ndim == 3 and "row 10, column 20" in note
    _, overlays, _, _ = app.effective_fields_at(EXAMPLE, None, None, "shapes", ["unet"], 4, (500, -3))  # clamped into the image
    assert overlays["unet"].shape == (64, 64, 3)


# --------------------------------------------------------------------------- losses and IoU


def test_class_weights_on_a_hand_made_mask(app, tmp_path):
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[:2] = 1  # 20 circle pixels
    mask[2, :] = 2  # 10 triangle pixels; 70 background, no rectangle
    table = app.class_weight_table(mask, SHAPES)
    assert table["Pixels N_c"].tolist() == [70, 20, 10, 0]
    assert table["Weight w_c"].tolist() == pytest.approx([(100 - 70) / 100, (100 - 20) / 100, (100 - 10) / 100, 1.0])
    image = np.full((10, 10, 3), 128, dtype=np.uint8)
    shown, figure, note = app.class_weights(None, save_png(tmp_path / "i.png", image), save_png(tmp_path / "m.png", mask), "shapes", None)
    assert shown["Weight w_c"].tolist() == pytest.approx([0.3, 0.8, 0.9, 1.0]) and "N = 100" in note


def test_loss_curves_follow_gamma(app):
    figure = app.loss_curves(3.0)
    ce, focal = figure.data[0], figure.data[1]
    p = np.asarray(focal.x)
    assert np.allclose(np.asarray(ce.y), -np.log(p)) and np.allclose(np.asarray(focal.y), focal_curve(p, 3.0))


def test_iou_map_counts_match_the_table(app):
    compare = final(app.compare(EXAMPLE, None, None, "shapes", ["unet"], 4, 0.5, None))
    session, table = compare[-1], compare[8]
    image, counts, session2 = app.iou_map_result(EXAMPLE, None, None, "shapes", "unet", "background", 4, session)
    _, gt, _ = example_image_and_mask()
    codes = iou_error_map(session["predictions"]["unet@0"], gt, 0)
    assert counts == {"tp": int((codes == 1).sum()), "fp": int((codes == 2).sum()), "fn": int((codes == 3).sum()), "iou": pytest.approx(table["IoU background"].item(), abs=1e-4)}
    assert image.shape == (64, 64, 3) and session2["predictions"].keys() == session["predictions"].keys()
    shown, note, _ = app.iou_map(EXAMPLE, None, None, "shapes", "unet", "background", 4, None)  # runs the model itself
    assert "TP / (TP + FP + FN)" in note or "undefined" in note


# --------------------------------------------------------------------------- semantic vs instance


def test_instances_from_shapes_ground_truth(app):
    _, _, instances = example_image_and_mask()
    classes, coloured, note, count, _ = app.instances_result(EXAMPLE, None, None, "shapes", "unet", "all classes", 4, None)
    assert count == len(np.unique(instances[instances > 0])) and "Ground truth" in note
    assert classes.shape == coloured.shape == (64, 64, 3)


def test_instances_as_connected_components_without_ground_truth(app, tmp_path):
    image, _, _ = example_image_and_mask()
    path = save_png(tmp_path / "photo.png", image)
    classes, coloured, note, count, session = app.instances_result(None, path, None, "shapes", "unet", "background", 4, None)
    labels = session["predictions"]["unet@0"]
    assert count == ndimage.label(labels == 0)[1]
    assert "connected components" in note and "Not ground-truth instances" in note


# --------------------------------------------------------------------------- bad inputs


def test_bad_image_is_a_clear_error(app, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"%PDF-1.7 definitely not an image")
    with pytest.raises(gr.Error, match="not a supported image") as info:
        final(app.compare(None, str(bad), None, "shapes", ALL, 4, 0.5, None))
    assert "Traceback" not in str(info.value)
    with pytest.raises(gr.Error, match="not a supported image"):
        app.preview(None, str(bad), None, "shapes", 0.5)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="empty file"):
        final(app.compare(None, str(empty), None, "shapes", ALL, 4, 0.5, None))
    whole = (tmp_path / "whole.png")
    save_png(whole, example_image_and_mask()[0])
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(gr.Error, match="truncated or corrupt"):
        final(app.compare(None, str(truncated), None, "shapes", ALL, 4, 0.5, None))


def test_wrong_size_or_values_mask_is_a_clear_error(app, tmp_path):
    image, mask, _ = example_image_and_mask()
    path = save_png(tmp_path / "img.png", image)
    with pytest.raises(gr.Error, match=r"mask is 32x32 but the image is 64x64"):
        final(app.compare(None, path, save_png(tmp_path / "small.png", mask[:32, :32]), "shapes", ALL, 4, 0.5, None))
    wrong = mask.copy()
    wrong[0, 0] = 9
    with pytest.raises(gr.Error, match="not class ids"):
        final(app.compare(None, path, save_png(tmp_path / "wrong.png", wrong), "shapes", ALL, 4, 0.5, None))
    with pytest.raises(gr.Error, match="without its image"):
        final(app.compare(EXAMPLE, None, str(tmp_path / "wrong.png"), "shapes", ALL, 4, 0.5, None))


def test_other_bad_requests(app):
    with pytest.raises(gr.Error, match="at least one model"):
        final(app.compare(EXAMPLE, None, None, "shapes", [], 4, 0.5, None))
    with pytest.raises(gr.Error, match="Unknown model set"):
        final(app.compare(EXAMPLE, None, None, "camvid", ALL, 4, 0.5, None))
    with pytest.raises(gr.Error, match="Unknown example"):
        final(app.compare("../../etc/passwd", None, None, "shapes", ALL, 4, 0.5, None))
    with pytest.raises(gr.Error, match="depth"):
        final(app.compare(EXAMPLE, None, None, "shapes", ALL, 9, 0.5, None))
    with pytest.raises(gr.Error, match="Unknown class"):
        app.iou_map(EXAMPLE, None, None, "shapes", "unet", "nonsense", 4, None)


@pytest.mark.parametrize("models, message", [
    (["unet"] * 500_000, None),  # duplicates are removed first: one model
    ([f"model{i}" for i in range(500_000)], "At most 4 different models"),
    ([1, 2], "list of names"),
])
def test_huge_or_odd_model_lists_are_answered_at_once(app, models, message):
    started = time.perf_counter()
    if message is None:
        assert app.check_models("shapes", models) == ["unet"]
    else:
        with pytest.raises(InputError, match=message):
            app.check_models("shapes", models)
    assert time.perf_counter() - started < 1.0


def test_long_strings_and_nan_are_refused_without_echo(app):
    huge = "x" * 50_000_000
    for call in (lambda: final(app.compare(huge, None, None, "shapes", ["unet"], 4, 0.5, None)),
                 lambda: final(app.compare(EXAMPLE, None, None, huge, ["unet"], 4, 0.5, None))):
        with pytest.raises(gr.Error) as info:
            call()
        assert len(str(info.value)) < 400 and "50,000,000 characters" in str(info.value)
    for opacity in (float("nan"), 2.0, "abc"):
        with pytest.raises(gr.Error, match="opacity"):
            final(app.compare(EXAMPLE, None, None, "shapes", ["unet"], 4, opacity, None))
    with pytest.raises(gr.Error, match="depth"):
        final(app.compare(EXAMPLE, None, None, "shapes", ["unet"], float("nan"), 0.5, None))


def test_iou_map_needs_ground_truth(app, tmp_path):
    path = save_png(tmp_path / "photo.png", example_image_and_mask()[0])
    with pytest.raises(gr.Error, match="needs a ground-truth mask"):
        app.iou_map(None, path, None, "shapes", "unet", "circle", 4, None)


def test_no_weights_installed(tiny_config, tmp_path):
    config = tiny_config(weights_dir=tmp_path / "empty")
    demo = build_demo(config)
    with pytest.raises(gr.Error, match="No trained models are installed"):
        final(demo.dashboard.compare(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))


def test_corrupted_weights_are_reported_and_the_others_run(tiny_config, own_zoo):
    (own_zoo / "shapes" / "unet3p.pt").write_bytes(b"garbage" * 100)
    (own_zoo / "shapes" / "unet.pt").unlink()
    app = Dashboard(tiny_config(weights_dir=own_zoo))
    out = final(app.compare(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))
    table = out[8]
    assert len(table) == 4
    status = dict(zip(table["Model"], table["Status"]))
    assert "corrupted or was swapped" in status["U-Net 3+"] and "missing" in status["U-Net"]
    assert status["U-Net++ L4"] == "ok" and status["DeepLabV3+"] == "ok"
    assert table.loc[table["Status"] == "ok", "Latency (ms)"].notna().all()
    assert "corrupted or was swapped" in out[0]  # the reason stays on screen, in the status
    # Every model broken: a clear error, not an empty result.
    with pytest.raises(gr.Error, match="No model could run"):
        final(app.compare(EXAMPLE, None, None, "shapes", ["unet", "unet3p"], 4, 0.5, None))


def test_out_of_memory_is_reported_and_the_next_request_works(app, tiny_zoo, monkeypatch):
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
    with pytest.raises(gr.Error, match="ran out of memory") as info:
        final(app.compare(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))
    assert "fewer models or a smaller image" in str(info.value) and emptied
    out = final(app.compare(EXAMPLE, None, None, "shapes", ALL, 4, 0.5, None))
    assert (out[8]["Status"] == "ok").all()


# --------------------------------------------------------------------------- the Blocks


def test_blocks_settings_for_a_public_demo(tiny_config):
    demo = build_demo(tiny_config(queue_max_size=7))
    assert demo.delete_cache == (3600, 3600)
    assert demo._queue.max_size == 7 and demo.api_open is False
    fns = [fn for fn in demo.fns.values() if fn.fn is not None]
    assert all(fn.queue for fn in fns)
    public = [fn for fn in fns if fn.api_visibility != "private"]
    assert [fn.api_name for fn in public] == ["compare"]
    model_events = {fn.name for fn in fns if fn.concurrency_id == "models"}
    assert {"compare", "pruning", "receptive_fields", "effective_fields", "iou_map", "instances"} <= model_events
    # Model jobs wait for their turn in the fair scheduler (holding no thread), not in Gradio's queue.
    assert {fn.concurrency_limit for fn in fns if fn.concurrency_id == "models"} == {None}
    assert all(inspect.iscoroutinefunction(fn.fn) or inspect.isasyncgenfunction(fn.fn) for fn in fns if fn.concurrency_id == "models")
    kwargs = launch_kwargs(tiny_config())
    assert kwargs["max_file_size"] == 10 * 2**20 and kwargs["allowed_paths"] in ([str(ASSETS_DIR.resolve())], [])


# --------------------------------------------------------------------------- CamVid examples and a second model set


@pytest.fixture
def camvid_setup(tiny_zoo, tmp_path):
    """A fake CamVid folder (two 36x48 val images, void = 11 in the masks) and a zoo holding
    the tiny Shapes models plus a tiny 11-class camvid/unet (card values made up)."""
    import json

    from segmodels import create_model
    from segmodels.cards import model_spec
    from segmodels.data import CAMVID

    root = tmp_path / "camvid"
    rng = np.random.default_rng(0)
    for split in ("val", "valannot"):
        (root / split).mkdir(parents=True)
    for name in ("0001TP_000010", "0001TP_000040"):
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(root / "val" / f"{name}.png")
        mask = rng.integers(0, 12, (36, 48)).astype(np.uint8)  # 11 = void
        Image.fromarray(mask, mode="L").save(root / "valannot" / f"{name}.png")
    weights = tmp_path / "weights"
    shutil.copytree(tiny_zoo, weights)
    model = create_model("unet", CAMVID.num_classes, encoder="plain", pretrained=False, base_channels=4)
    run = tmp_path / "run"
    run.mkdir()
    spec = model_spec("unet", "plain", CAMVID.num_classes, 4, {})
    torch.save({"model": model.state_dict(), "spec": spec, "epoch": 1}, run / "best.pt")
    (run / "card.json").write_text(json.dumps({**spec, "note": "TEST FIXTURE: made-up scores", "dataset": CAMVID.to_dict(), "val_miou": 0.5, "val_per_class_iou": {n: 0.5 for n in CAMVID.class_names}}))
    zoo.export_model(run, "camvid/unet", weights_dir=weights)
    return root, weights


def test_camvid_examples_and_set(tiny_config, camvid_setup, monkeypatch):
    root, weights = camvid_setup
    app = Dashboard(tiny_config(weights_dir=weights, camvid_dir=root))
    assert app.sets() == ["camvid", "shapes"] and app.default_set() == "camvid"
    without_examples = Dashboard(tiny_config(weights_dir=weights))
    assert without_examples.default_set() == "shapes"  # no CamVid examples to start on
    notices = []
    monkeypatch.setattr(gr, "Info", notices.append)
    without_examples.set_changed("camvid", "shapes-1000")
    assert len(notices) == 1 and "upload" in notices[0]
    app.set_changed("camvid", "camvid-0001TP_000010")
    assert len(notices) == 1
    assert app.default_example("camvid") == "camvid-0001TP_000010" and app.default_example("shapes") == "shapes-1000"
    assert [e.label for e in app.gallery_examples("camvid")] == ["CamVid val 0001TP_000010", "CamVid val 0001TP_000040"]
    with pytest.raises(gr.Error, match="ships no U-Net\\+\\+"):
        final(app.compare("camvid-0001TP_000010", None, None, "camvid", ["unetpp"], 4, 0.5, None))
    result = app.compare_result("camvid-0001TP_000010", None, None, "camvid", ["unet"], 4)
    assert (result.gt == 11).any() and len([c for c in result.table.columns if c.startswith("IoU ")]) == 11
    matrix = ConfusionMatrix(11, 11)
    matrix.update(torch.from_numpy(result.runs[0].labels.astype(np.int64)), torch.from_numpy(result.gt.astype(np.int64)))
    assert result.table["mIoU (this image)"].item() == pytest.approx(matrix.compute()["miou"], abs=1e-4)
    classes, coloured, note, count, _ = app.instances_result("camvid-0001TP_000010", None, None, "camvid", "unet", "Car", 4, None)
    assert "connected components" in note and "Car" in note and count >= 0
    # A Shapes example under the CamVid models: its ground truth does not apply.
    result = app.compare_result("shapes-1000", None, None, "camvid", ["unet"], 4)
    assert result.gt is None and any("shapes classes" in n for n in result.notes)
    # Changing the set offers that set's models, classes and examples.
    out = app.set_changed("shapes", "camvid-0001TP_000010")
    assert out[0].choices == [("U-Net", "unet"), ("U-Net++", "unetpp"), ("U-Net 3+", "unet3p"), ("DeepLabV3+", "deeplabv3p")]
    assert out[1].value == "shapes-1000" and [c[0] for c in out[4].choices] == list(SHAPES.class_names)


def test_preview_and_environment(tiny_config, camvid_setup, monkeypatch):
    root, weights = camvid_setup
    monkeypatch.setenv("SEGMODELS_CAMVID", str(root))
    monkeypatch.setenv("SEGMODELS_WEIGHTS", str(weights))
    from demo import DemoConfig

    config = DemoConfig()
    assert config.camvid_dir == root.resolve() and config.weights_dir == weights.resolve()
    app = Dashboard(tiny_config(weights_dir=weights, camvid_dir=root))
    image, gt, legend, click, note = app.preview("camvid-0001TP_000040", None, None, "camvid", 0.5)
    assert image.shape == (36, 48, 3) and gt.shape == image.shape and "Sky" in legend and "with ground truth" in note


def test_examples_are_shown_even_without_models(tiny_config, tmp_path):
    app = Dashboard(tiny_config(weights_dir=tmp_path / "none"))
    image, gt, legend, click, note = app.preview(EXAMPLE, None, None, None, 0.5)
    assert image.shape == gt.shape == (64, 64, 3) and "circle" in legend and "with ground truth" in note


@pytest.mark.parametrize("shape", [(1, 1, 3), (3, 1000, 3), (40, 30), (20, 20, 4)])
def test_odd_image_shapes_and_modes(app, tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    path = save_png(tmp_path / "odd.png", array)
    result = app.compare_result(None, path, None, "shapes", ALL, 4)
    assert (result.table["Status"] == "ok").all() and max(result.source.size) <= app.config.max_side
    _, overlays, pooling, _ = app.effective_fields_at(None, path, None, "shapes", ["deeplabv3p"], 4, (0, 0))
    assert overlays["deeplabv3p"].shape[:2] == result.source.size and pooling.shape[1] < 5000
