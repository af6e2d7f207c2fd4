"""What every tab shares: the App (choices, examples, the image of a request), the shared
controls' handlers, the image files, the tables' latency columns, the charts, and the Blocks
(events, API names and defaults)."""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time

import gradio as gr
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from conftest import REPO, build_fake_camvid
from demo import build_demo, figures, launch_kwargs, pictures
from demo.config import ASSETS_DIR
from demo.controls import PICKED, PREVIEW, SET_CHANGED, Controls
from demo.core import App
from demo.files import ImageFiles
from demo.scores import latency_columns
from demo.session import PredictionKey, SessionCache
from demo.tabs import compare, instances, pruning, tab_modules
from demo.view import View
from segmodels.data import CAMVID, render_shapes
from segmodels.metrics import ConfusionMatrix
from segmodels.runtime import Latency

EXAMPLE = "shapes-1000"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def app(tiny_config) -> App:
    return App(tiny_config())


def final(stream):
    *_, last = stream
    return last


def save_png(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


# --------------------------------------------------------------------------- the shared controls


def test_preview_names_the_image_and_sets_its_identity(app):
    session = SessionCache()
    out = PREVIEW.named(Controls(app).preview(EXAMPLE, None, None, "shapes", session))
    assert out["current"].startswith("**Current image:** Shapes #1000, 64x64 px, with ground truth.")
    assert out["image_changed"] == session.shown == f"shapes/{EXAMPLE}"


def test_a_preview_overtaken_by_a_run_on_a_newer_choice_is_dropped(app, monkeypatch):
    """A slow preview of the old image finishes after Run started on the new one: it must not
    name the old image over the run's results (the new image's own preview follows)."""
    session = SessionCache()
    resolve = app.images.current

    def run_starts_meanwhile(example, *args):
        session.show(f"shapes/{started_on}")  # what Compare.stream does as it starts
        return resolve(example, *args)

    monkeypatch.setattr(app.images, "current", run_starts_meanwhile)
    started_on = "shapes-1002"
    assert Controls(app).preview(EXAMPLE, None, None, "shapes", session) == PREVIEW() and session.shown == "shapes/shapes-1002"
    started_on = EXAMPLE  # a run on the very image previewed: the preview completes
    assert PREVIEW.named(Controls(app).preview(EXAMPLE, None, None, "shapes", session))["image_changed"] == f"shapes/{EXAMPLE}"


def test_a_bad_upload_is_explained_under_the_controls(app, tmp_path):
    """The message stays on the page, in the "Current image" line, and every tab's old results go."""
    bad = tmp_path / "holiday.png"
    bad.write_bytes(b"%PDF-1.7 definitely not an image")
    session = SessionCache(shown=f"shapes/{EXAMPLE}")
    out = PREVIEW.named(Controls(app).preview(EXAMPLE, str(bad), None, "shapes", session))
    assert "inline-error" in out["current"] and "not a supported image" in out["current"] and "Traceback" not in out["current"]
    assert out["image_changed"] == "" and session.shown == ""


def test_a_large_upload_says_it_was_shrunk(app, tmp_path):
    big = np.random.default_rng(0).integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    out = PREVIEW.named(Controls(app).preview(None, save_png(tmp_path / "big.png", big), None, "shapes", None))
    assert "384x512" not in out["current"] and "512x384 px" in out["current"]
    assert "Your 1200x900 px image was shrunk to 512x384 px" in out["current"]


def test_a_tiny_upload_is_run_with_a_warning(app, tmp_path):
    tiny = save_png(tmp_path / "tiny.png", np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    out = PREVIEW.named(Controls(app).preview(None, tiny, None, "shapes", None))
    assert "Your image is only 8x8 px: the models learned from 128x128 px pictures" in out["current"] and "say little" in out["current"]
    last = compare.VIEW.named(final(compare.Compare(app).stream(None, tiny, None, "shapes", ["unet"], 4, 0.5, None)))
    assert "1 of 1 models ran" in last["status"] and "only 8x8 px" in last["status"]  # it runs, and the result says what it is worth
    assert "only" not in PREVIEW.named(Controls(app).preview(EXAMPLE, None, None, "shapes", None))["current"]


def test_the_highlighted_thumbnail_follows_the_chosen_example(app):
    controls = Controls(app)
    assert controls.highlight("shapes", "shapes-1002")["selected_index"] == 2
    assert controls.highlight("shapes", None)["selected_index"] is None  # an upload: no thumbnail is the image
    assert SET_CHANGED.named(controls.set_changed("shapes", "shapes-1001"))["gallery"]["selected_index"] == 1


def test_depth_slider_follows_the_models_that_can_be_pruned(app, monkeypatch):
    controls = Controls(app)
    assert controls.models_changed("shapes", ["unet", "deeplabv3p"])["visible"] is False
    assert controls.models_changed("shapes", ["unet", "unetpp"])["visible"] is True
    monkeypatch.setattr(app.engine, "pruning_depths", lambda set_name, arch: (1, 2) if arch == "unet3p" else ())  # a model's declared depths decide
    assert controls.models_changed("shapes", ["unet3p"])["visible"] is True and controls.models_changed("shapes", ["unetpp"])["visible"] is False


def test_a_thumbnail_picks_its_example_and_clears_uploads(app):
    out = PICKED.named(Controls(app).pick_example("shapes", gr.SelectData(None, {"index": 2, "value": None})))
    assert out == {"example": "shapes-1002", "image_file": None, "mask_file": None}
    assert Controls(app).pick_example("shapes", gr.SelectData(None, {"index": 99, "value": None})) == PICKED()


def test_examples_are_shown_even_without_models(tiny_config, tmp_path):
    app = App(tiny_config(weights_dir=tmp_path / "none"))
    out = PREVIEW.named(Controls(app).preview(EXAMPLE, None, None, None, None))
    assert "Shapes #1000, 64x64 px, with ground truth" in out["current"]
    assert compare.SHOWN.named(compare.Compare(app).show_image(EXAMPLE, None, None, None, 0.5, f"shapes/{EXAMPLE}", None))["image"].endswith(".webp")


# --------------------------------------------------------------------------- CamVid examples and a second model set


@pytest.fixture
def camvid_setup(tiny_zoo, tmp_path):
    """A fake CamVid folder and a zoo with the tiny Shapes models and a tiny camvid/unet."""
    return build_fake_camvid(tmp_path / "camvid", tmp_path / "weights", tiny_zoo, tmp_path / "run")


def test_camvid_examples_and_set(tiny_config, camvid_setup, monkeypatch):
    root, weights = camvid_setup
    app = App(tiny_config(weights_dir=weights, camvid_dir=root))
    assert app.choices.sets() == ["camvid", "shapes"] and app.choices.default_set() == "camvid"
    assert App(tiny_config(weights_dir=weights)).choices.default_set() == "shapes"  # no CamVid examples to start on
    # Each set offers its own examples only (the CamVid list no longer offers Shapes).
    assert [key for _, key in app.choices.example_choices("camvid")] == ["camvid-0001TP_000010", "camvid-0001TP_000040"]
    assert [key for _, key in app.choices.example_choices("shapes")] == ["shapes-1000", "shapes-1001", "shapes-1002"]
    notices = []
    monkeypatch.setattr(gr, "Info", notices.append)
    Controls(App(tiny_config(weights_dir=weights))).set_changed("camvid", EXAMPLE)
    assert len(notices) == 1 and "upload" in notices[0]
    out = SET_CHANGED.named(Controls(app).set_changed("shapes", "camvid-0001TP_000010"))
    assert len(notices) == 1
    assert out["models"]["choices"] == [("U-Net", "unet"), ("U-Net++", "unetpp"), ("U-Net 3+", "unet3p"), ("DeepLabV3+", "deeplabv3p")]
    assert out["example"]["value"] == EXAMPLE and out["depth"]["visible"] is True and "class ids 0-3" in out["upload_help"]
    out = SET_CHANGED.named(Controls(app).set_changed("camvid", EXAMPLE))
    assert out["example"]["value"] == "camvid-0001TP_000010" and out["depth"]["visible"] is False  # camvid/unet cannot be pruned
    assert "unlabelled pixels: id 11 or black (0, 0, 0)" in out["upload_help"]
    # The preview skips the moment between a set change and its example's arrival.
    assert Controls(app).preview(EXAMPLE, None, None, "camvid", None) == PREVIEW()
    with pytest.raises(gr.Error, match="ships no U-Net\\+\\+"):
        final(compare.Compare(app).stream("camvid-0001TP_000010", None, None, "camvid", ["unetpp"], 4, 0.5, None))
    result = compare.Compare(app).compare("camvid-0001TP_000010", None, None, "camvid", ["unet"], 4)
    assert (result.image.gt == 11).any() and len(result.per_class.columns) == 1 + 11
    matrix = ConfusionMatrix(11, 11)
    matrix.update(torch.from_numpy(result.runs[0].labels.astype(np.int64)), torch.from_numpy(result.image.gt.astype(np.int64)))
    assert result.table["mIoU (this image)"].item() == pytest.approx(matrix.compute()["miou"], abs=1e-4)
    current = app.images.current("camvid-0001TP_000010", None, None, "camvid")
    found = instances.InstancesTab(app).instances(current, "unet", "Car", 4, SessionCache())
    assert "connected components" in found.note and "Car" in found.note and found.component_count >= 0 and found.predicted is None
    # An API call that names a Shapes example where the page offers CamVid ones runs the Shapes
    # models, with the example's ground truth; where the CamVid set has no examples of its own
    # the page offers the Shapes ones to the CamVid models, and their ground truth does not apply.
    result = compare.Compare(app).compare(EXAMPLE, None, None, "camvid", ["unet"], 4)
    assert result.image.set_name == "shapes" and result.image.gt is not None
    result = compare.Compare(App(tiny_config(weights_dir=weights))).compare(EXAMPLE, None, None, "camvid", ["unet"], 4)
    assert result.image.gt is None and any("shapes classes" in n for n in result.image.notes)
    assert instances.InstancesTab(app).choices("camvid")[1]["choices"][:2] == ["all classes", "Sky"]


def test_a_camvid_colour_mask_with_black_unlabelled_pixels(tiny_config, camvid_setup, tmp_path):
    root, weights = camvid_setup
    app = App(tiny_config(weights_dir=weights, camvid_dir=root))
    ids = np.array(Image.open(root / "valannot" / "0001TP_000010.png"))
    colours = CAMVID.colorize(ids)  # void (11) is black
    assert (colours[ids == 11] == 0).all()
    image = save_png(tmp_path / "street.png", np.array(Image.open(root / "val" / "0001TP_000010.png")))
    current = app.images.current(None, image, save_png(tmp_path / "mask.png", colours), "camvid")
    assert np.array_equal(current.gt, ids)


def test_preview_and_environment(tiny_config, camvid_setup, monkeypatch):
    root, weights = camvid_setup
    monkeypatch.setenv("SEGMODELS_CAMVID", str(root))
    monkeypatch.setenv("SEGMODELS_WEIGHTS", str(weights))
    from demo import DemoConfig

    config = DemoConfig()
    assert config.camvid_dir == root.resolve() and config.weights_dir == weights.resolve()
    app = App(tiny_config(weights_dir=weights, camvid_dir=root))
    out = compare.SHOWN.named(compare.Compare(app).show_image("camvid-0001TP_000040", None, None, "camvid", 0.5, "camvid/camvid-0001TP_000040", SessionCache()))
    image = np.asarray(Image.open(out["image"]))
    assert image.shape == (36, 48, 3) and np.asarray(Image.open(out["truth"])).shape == image.shape and "Sky" in out["legend"]
    assert out["mask_unet"] == {"__type__": "update", "value": None, "visible": False}  # the old results are cleared


# --------------------------------------------------------------------------- sessions, files, tables and charts


def test_session_cache_is_typed_and_per_image(app):
    session = SessionCache()
    current = app.images.current(EXAMPLE, None, None, "shapes")
    labels = app.predictions.predict(current, "unetpp", 2, session)
    assert list(session.predictions) == [PredictionKey("unetpp", 2)]
    assert app.predictions.predict(current, "unetpp", 2, session) is labels  # from the session, not run again
    other = app.images.current("shapes-1001", None, None, "shapes")
    assert session.predictions_for(other) == {}
    app.predictions.predict(other, "unet", 4, session)
    assert session.image == other.identity and len(session.predictions) == 1  # the old image's predictions are gone


def test_image_files_are_written_once_and_atomically(tmp_path):
    files = ImageFiles(tmp_path / "shown", keep=3)
    image = render_shapes(1000, 0, 32)[0]
    first = files.path(image)
    inode, mtime = os.stat(first).st_ino, os.stat(first).st_mtime_ns
    time.sleep(0.01)
    assert files.path(image.copy()) == first and os.stat(first).st_ino == inode and os.stat(first).st_mtime_ns == mtime  # never rewritten
    assert np.abs(np.asarray(Image.open(first)).astype(int) - image).mean() < 16  # lossy WebP on a noise texture; another picture differs by far more
    assert files.path(image[:16]) != first  # another picture, another name
    others = [files.path(render_shapes(seed, 0, 32)[0]) for seed in (1, 2, 3)]
    assert not os.path.exists(first) and all(os.path.exists(p) for p in others)  # only the most recent are kept
    assert not [p for p in (tmp_path / "shown").iterdir() if p.name.startswith(".")]  # no staging file left


def test_every_image_output_is_a_file_never_an_array(app):
    """Gradio rewrites the file of an image returned as an array each time the same picture is
    returned, under a reader's feet (a broken image); the dashboard returns files instead."""
    for out in compare.Compare(app).stream(EXAMPLE, None, None, "shapes", ["unet"], 4, 0.5, None):
        for name, value in compare.VIEW.named(out).items():
            shown = value.get("value") if isinstance(value, dict) else value
            assert not isinstance(shown, np.ndarray), name
    for name, value in compare.SHOWN.named(compare.Compare(app).show_image(EXAMPLE, None, None, "shapes", 0.5, f"shapes/{EXAMPLE}", None)).items():
        assert not isinstance(value, np.ndarray), name
    assert [np.asarray(Image.open(path)).shape for path in app.images.thumbnails("shapes")] == [(64, 64, 3)] * 3


def test_latency_columns_flag_doubtful_figures_beside_them():
    from demo.scores import origin_column

    steady = latency_columns(Latency(12.0, 1.0, 5, "benchmark", time.time(), 0.05, 4)) | origin_column(Latency(12.0, 1.0, 5, "benchmark", time.time(), 0.05, 4), 4, True)
    assert steady["Latency (ms)"] == 12.0 and steady["IQR (ms)"] == 1.0 and steady["Latency from"].startswith("timed together ×5")
    noisy = origin_column(Latency(890.0, 796.0, 5, "benchmark", time.time()))["Latency from"]
    assert noisy.startswith("⚠ noisy (IQR > ¼ median), benchmark ×5")
    busy = origin_column(Latency(300.0, 4.0, 5, "benchmark", time.time(), 0.47, 4), 4, True)["Latency from"]
    assert busy.startswith("⚠ busy machine (47% used by others), timed together")  # an even slowdown: a small IQR, yet flagged
    apart = origin_column(Latency(30.0, 1.0, 5, "benchmark", time.time(), 0.0, 1), 4, False)["Latency from"]
    assert apart.startswith("⚠ timed apart (together: pending)")
    single = latency_columns(Latency(36.9, 0.0, 1, "single pass", time.time())) | origin_column(Latency(36.9, 0.0, 1, "single pass", time.time()))
    assert single["Latency from"].startswith("⚠ 1 pass, ") and "(benchmark pending)" in single["Latency from"] and np.isnan(single["IQR (ms)"])


def test_the_compute_chart_names_every_point_apart_on_a_log_axis():
    """CamVid-like values where three models lie within 0.005 mIoU and two within 10 % of each
    other's GFLOPs: every point is named, and no two names overlap on a phone-sized plot."""
    table = pd.DataFrame({"Model": ["U-Net", "U-Net++ L4", "U-Net 3+", "DeepLabV3+"], "mIoU (this image)": [0.70, 0.726, 0.730, 0.725], "mIoU (card, val set)": [0.705, 0.726, 0.730, 0.723],
                          "Latency (ms)": [55.0, 80.0, 128.0, 57.0], "GFLOPs": [13.6, 23.4, 80.0, 21.2], "Latency from": ["timed together"] * 3 + ["⚠ busy machine"]})
    figure = figures.miou_cost_figure(table, has_gt=True)
    assert [trace.name for trace in figure.data] == list(table["Model"]) and figure.layout.xaxis.type == "log"
    assert [annotation.text for annotation in figure.layout.annotations] == list(table["Model"])
    assert figure.layout.legend.yref == "container"  # under the plot, never over the points or the labels
    low, high = figure.layout.yaxis.range
    assert 0.6 < low < 0.70 and 0.730 < high < 0.8  # from the data: close scores stay apart
    x_range, y_range = list(figure.layout.xaxis.range), list(figure.layout.yaxis.range)
    offsets = figures.label_offsets([math.log10(v) for v in table["GFLOPs"]], list(table["mIoU (this image)"]), list(table["Model"]), x_range, y_range)
    width, height = figures.NARROWEST_PLOT
    boxes = []
    for (dx, dy), x, y, text in zip(offsets, table["GFLOPs"], table["mIoU (this image)"], table["Model"]):
        cx = (math.log10(x) - x_range[0]) / (x_range[1] - x_range[0]) * width + dx
        cy = (1 - (y - y_range[0]) / (y_range[1] - y_range[0])) * height + dy
        boxes.append((cx - 3.8 * len(text), cy - 8, cx + 3.8 * len(text), cy + 8))
    assert not [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
    assert "(doubtful)" in figure.data[3].hovertemplate and all(trace.cliponaxis is False for trace in figure.data)


def test_charts_are_serialised_in_plotly_white():
    """The dashboard's template is plotly's default (importing demo sets it), so each chart's JSON carries it."""
    table = pd.DataFrame({"Model": ["U-Net"], "mIoU (this image)": [0.5], "mIoU (card, val set)": [0.6], "Latency (ms)": [10.0], "GFLOPs": [1.0], "Latency from": ["benchmark"]})
    layout = json.loads(figures.miou_cost_figure(table, has_gt=True).to_json())["layout"]
    assert layout["template"]["layout"]["plot_bgcolor"] == "white"


def test_the_per_class_chart_names_every_class():
    table = pd.DataFrame({"Model": ["U-Net", "DeepLabV3+"], **{f"IoU {name}": [0.5, 0.6] for name in CAMVID.class_names}})
    figure = figures.per_class_figure(table, CAMVID.class_names, "this image")
    assert all(trace.orientation == "h" for trace in figure.data) and list(figure.layout.yaxis.tickvals) == list(CAMVID.class_names)  # a row per class, each named


def test_results_tables_fit_any_screen_as_html():
    table = pd.DataFrame({"Model": ["U-Net <b>"], "mIoU (this image)": [0.7012], "Latency from": ["timed together ×5, 14:03"], "GFLOPs": [float("nan")]})
    shown = figures.table_html(table, "Comparison")
    assert "data-label='mIoU (this image)' class=num>0.7012<" in shown and "U-Net &lt;b&gt;" in shown and ">–<" in shown  # escaped; missing as a dash
    assert shown.count("data-label=") == 4 and "aria-label='Comparison'" in shown


def test_overlay_blends_class_colours_and_leaves_unknown_ids_alone():
    image = np.full((2, 4, 3), 100, dtype=np.uint8)
    labels = np.array([[0, 1, 11, 255], [-1, 3, 300, 2]])
    assert pictures.overlay(image, labels, CAMVID, 0.0).tolist() == image.tolist()
    opaque = pictures.overlay(image, labels, CAMVID, 1.0)
    assert opaque[0, 0].tolist() == list(CAMVID.colors[0]) and opaque[1, 1].tolist() == list(CAMVID.colors[3])
    assert opaque[0, 2:].tolist() == [[100] * 3] * 2 and opaque[1, [0, 2]].tolist() == [[100] * 3] * 2  # void, ignore, negative, too large
    half = pictures.overlay(image, np.array([[0, 1, 11, 255]], dtype=np.uint8), CAMVID, 0.5)
    assert np.abs(half[0, 1].astype(int) - (np.array(CAMVID.colors[1]) + 100) / 2).max() <= 1


def test_pruning_chart_names_each_depth_on_a_log_axis():
    table = pd.DataFrame({"Depth": ["L1", "L2"], "mIoU (this image)": [0.3, 0.7], "mIoU (card, val set)": [0.3, 0.72], "Latency (ms)": [15.3, 15.8], "GFLOPs": [2.1, 6.0],
                          "Latency from": ["⚠ noisy", "benchmark"]})
    figure = figures.pruning_figure(table)
    assert [annotation.text for annotation in figure.layout.annotations] == ["L1", "L2"] and figure.layout.xaxis.type == "log"
    assert len(figure.data) == 2 and "latency %{customdata[1]:.1f} ms" in figure.data[0].hovertemplate


def test_view_names_outputs():
    view = View("status", "table")
    assert view(table=1) == (gr.skip(), 1) and view.named(("a", "b")) == {"status": "a", "table": "b"}
    with pytest.raises(TypeError, match="not outputs of this view: plot"):
        view(plot=1)


# --------------------------------------------------------------------------- the Blocks


def test_blocks_settings_for_a_public_demo(tiny_config):
    demo = build_demo(tiny_config(queue_max_size=7))
    assert demo.delete_cache == (3600, 3600)
    assert demo._queue.max_size == 7 and demo.api_open is False
    fns = [fn for fn in demo.fns.values() if fn.fn is not None]
    assert all(fn.queue for fn in fns)
    assert [fn.api_name for fn in fns if fn.api_visibility != "private"] == ["compare"]
    model_events = {fn.api_name for fn in fns if fn.concurrency_id == "models"}
    assert model_events == {"compare", "pruning", "pruning_tab", "receptive_fields", "receptive_tab", "effective_fields", "iou_map", "losses_tab_iou", "instances", "instances_tab",
                            "instances_touching_show", "inside_look", "losslab_train"}
    # Model jobs wait for their turn in the fair scheduler (holding no thread), not in Gradio's queue.
    assert {fn.concurrency_limit for fn in fns if fn.concurrency_id == "models"} == {None}
    assert all(inspect.iscoroutinefunction(fn.fn) or inspect.isasyncgenfunction(fn.fn) for fn in fns if fn.concurrency_id == "models")
    previews = [fn for fn in fns if fn.api_name == "preview"]
    assert len(previews) == 1 and previews[0].trigger_mode == "always_last" and len(previews[0].targets) == 5  # one preview for every trigger
    kwargs = launch_kwargs(tiny_config())
    assert kwargs["max_file_size"] == 10 * 2**20 and kwargs["allowed_paths"] in ([str(ASSETS_DIR.resolve())], [])
    assert kwargs["state_session_capacity"] == 100  # closed tabs' sessions are kept until evicted: this bounds their memory


def test_api_outputs_are_named_and_optional_inputs_have_defaults(tiny_config):
    info = build_demo(tiny_config()).get_api_info()["named_endpoints"]["/compare"]
    assert all(p["parameter_has_default"] for p in info["parameters"]), [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
    assert [p["parameter_name"] for p in info["parameters"]] == ["example", "image_file", "mask_file", "set_name", "models", "depth", "opacity"]
    labels = [r["label"] for r in info["returns"]]
    assert not [label for label in labels if label.startswith("value_")], labels
    assert labels[:9] == ["Status", "Class colours", "Image", "Ground truth", "U-Net", "U-Net++", "U-Net 3+", "DeepLabV3+", "Comparison on this image"]


def test_tables_and_charts_are_hidden_until_they_have_results(tiny_config):
    config = build_demo(tiny_config()).get_config_file()
    results = ("compare-table", "per-class-table", "compare-scatter", "pruning-table", "pruning-plot")
    hidden = {c["props"].get("elem_id"): c["props"]["visible"] for c in config["components"] if c["props"].get("elem_id") in results}
    assert hidden == dict.fromkeys(("compare-table", "per-class-table", "compare-scatter", "pruning-table", "pruning-plot"), False)
    tabs = [c["props"]["label"] for c in config["components"] if c["type"] == "tabitem"]
    assert tabs[:4] == ["Compare", "U-Net++ pruning", "Receptive field", "Losses and IoU"] and tabs[-1] == "Semantic vs instance"
    assert len(tabs) == len(tab_modules())


def test_readme_screenshots_exist_and_stay_small():
    """The README shows screenshots that scripts/screenshots.py takes; they are kept small."""
    import re

    root = REPO
    shown = re.findall(r'src="(docs/screenshots/[^"]+\.png)"', (root / "README.md").read_text(encoding="utf-8"))
    assert {"docs/screenshots/desktop-compare.png", "docs/screenshots/phone-compare.png"} <= set(shown)
    assert all((root / path).is_file() for path in shown), [path for path in shown if not (root / path).is_file()]
    assert sum((root / path).stat().st_size for path in shown) < 600 * 1024


def test_zero_gpu_is_optional(monkeypatch):
    from demo.context import zero_gpu

    def job():
        return 1

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zero_gpu(job) is job
    monkeypatch.setenv("SPACES_ZERO_GPU", "1")
    monkeypatch.setitem(sys.modules, "spaces", None)  # no usable package: the job runs as it is
    assert zero_gpu(job) is job


def test_a_model_failing_on_an_image_is_reported_and_the_others_still_run(app, monkeypatch):
    predict = app.engine.predictor.predict

    def failing(name, x, depth=None, runtime=None):
        if name.endswith("/unet"):
            raise RuntimeError("boom")
        return predict(name, x, depth, runtime)

    monkeypatch.setattr(app.engine.predictor, "predict", failing)
    current = app.images.current(EXAMPLE, None, None, "shapes")
    runs = list(app.engine.run_models("shapes", ["unet", "deeplabv3p"], current.image, 4, current.gt, current.info))
    assert runs[0].error == "U-Net failed on this image (RuntimeError: boom)" and runs[1].ok


def test_an_image_asked_for_again_reuses_its_masks_across_sessions(tiny_config, own_zoo, monkeypatch):
    app = App(tiny_config(weights_dir=own_zoo))
    passes = []
    predict = app.engine.predictor.predict
    monkeypatch.setattr(app.engine.predictor, "predict", lambda name, x, depth=None, runtime=None: passes.append(name) or predict(name, x, depth, runtime))
    tab = compare.Compare(app)
    first = compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ["unet", "unetpp"], 4, 0.5, None)))
    assert len(passes) == 2 and "already run" not in first["status"]
    second = compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ["unet", "unetpp"], 4, 0.5, None)))  # another session
    assert len(passes) == 2 and "2 of 2 models ran on **CPU** (PyTorch) for an earlier request on this same image; their masks were shared, so no forward pass ran now." in second["status"]
    third = compare.VIEW.named(final(tab.stream(EXAMPLE, None, None, "shapes", ["unet", "deeplabv3p"], 4, 0.5, None)))
    assert len(passes) == 3 and "one forward pass each; U-Net had already run on this same image for an earlier request, so its mask was shared." in third["status"]
    assert second["table"]["mIoU (this image)"].tolist() == first["table"]["mIoU (this image)"].tolist()
    reused = list(app.engine.run_models("shapes", ["unet"], app.images.current(EXAMPLE, None, None, "shapes").image, 4))[0]
    assert reused.reused and not reused.labels.flags.writeable  # one array for every session: nobody may draw on it
    tab.compare("shapes-1001", None, None, "shapes", ["unet"], 4)  # another image runs
    tab.compare(EXAMPLE, None, None, "shapes", ["unetpp"], 2)  # another depth runs
    assert passes[3:] == ["shapes/unet", "shapes/unetpp"]
    weights = own_zoo / "shapes" / "unet.pt"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # the weight file was replaced
    tab.compare(EXAMPLE, None, None, "shapes", ["unet"], 4)
    assert passes[5:] == ["shapes/unet"]


def test_the_pruning_tab_says_when_every_depth_was_shared(app):
    tab = pruning.Pruning(app)
    first = tab.view.named(final(tab.stream(EXAMPLE, None, None, "shapes", 0.5, None)))["status"]
    again = tab.view.named(final(tab.stream(EXAMPLE, None, None, "shapes", 0.5, None)))["status"]
    assert "one forward pass each." in first and "shared" not in first.split("<small>")[0]
    assert "their masks were computed for an earlier request on this same image and shared, so no forward pass ran now." in again


def test_shared_masks_stay_within_their_memory_and_can_be_turned_off(tiny_config):
    from demo.shared_masks import SharedPrediction, SharedPredictions

    def entry(side):
        return SharedPrediction(np.zeros((side, side), np.uint8), "torch", Latency(1.0, 0.0, 1, "single pass", time.time()))

    shared = SharedPredictions(max_bytes=250)
    for key in "abc":
        shared.put((key,), entry(10))  # 100 bytes each
    assert shared.get(("a",)) is None and shared.get(("b",)) is not None and shared.bytes == 200 and len(shared) == 2
    shared.put(("d",), entry(10))  # "b" was used last, so "c" goes
    assert shared.get(("c",)) is None and shared.get(("b",)) is not None
    shared.put(("huge",), entry(20))  # larger than all of it: not kept
    assert shared.get(("huge",)) is None and shared.bytes == 200
    off = App(tiny_config(shared_predictions_mb=0))
    image = off.images.current(EXAMPLE, None, None, "shapes").image
    for _ in range(2):
        assert not list(off.engine.run_models("shapes", ["unet"], image, 4))[0].reused
    with pytest.raises(ValueError, match="shared_predictions_mb must be at least 0"):
        tiny_config(shared_predictions_mb=-1)


def test_the_app_and_the_readme_quote_one_val_miou():
    """Every shipped model's val mIoU in the dashboard (the card's CPU re-evaluation) is the
    figure of the README's zoo table, at every U-Net++ depth."""
    import re

    from demo import DemoConfig
    from demo.engine import ModelRun
    from demo.scores import card_miou

    readme = (ASSETS_DIR.parent / "README.md").read_text(encoding="utf-8")
    quoted = dict(re.findall(r"^\| ((?:camvid|shapes)/\w+(?: L\d)?) \| (0\.\d{4}) \|", readme, flags=re.MULTILINE))
    app = App(DemoConfig(camvid_dir=None, device="cpu", warm_up=False))
    checked = 0
    for set_name in app.choices.sets():
        for arch in app.choices.archs(set_name):
            depths = [entry.depth for entry in app.engine.card(set_name, arch).pruning] or [None]
            for depth in depths:
                name = f"{set_name}/{arch}" + (f" L{depth}" if depth else "")
                assert f"{card_miou(app.engine, set_name, ModelRun(arch, name, depth)):.4f}" == quoted[name], name
                checked += 1
    assert checked == len(quoted) >= 8
