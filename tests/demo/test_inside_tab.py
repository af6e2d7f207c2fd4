"""The "Inside the network" tab (demo/tabs/inside.py), built in a small gr.Blocks with the
shared components and a stand-in for demo.context.Shared holding only what the tab uses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest

from demo import DemoConfig
from demo.catalogue import Catalogue
from demo.engine import Engine
from demo.errors import InputError
from demo.inside_graph import GREY, edge_path
from demo.scheduler import FairScheduler
from demo.serving import on_device
from demo.session import SessionCache
from demo.tabs import inside
from segmodels.data import render_shapes
from segmodels.zoo import WEIGHTS_DIR

ARCHS = ["unet", "unetpp", "unet3p", "deeplabv3p"]


@dataclass
class CurrentImage:
    key: str
    label: str
    image: np.ndarray
    set_name: str

    @property
    def identity(self) -> str:
        return f"{self.set_name}/{self.key}"


class StandInApp:
    """The parts of demo.core.App the tab calls (its choices, checks and request images), over a real Engine."""

    def __init__(self, config: DemoConfig, image: np.ndarray):
        self.config = config
        self.engine = Engine(config, Catalogue(config.weights_dir))
        self.image = image
        self.images_decoded = 0
        self.choices = SimpleNamespace(archs=self.archs)
        self.check = SimpleNamespace(set_name=self.check_set, depth=self.check_depth)
        self.images = SimpleNamespace(current=self.current_image)

    def archs(self, set_name: str) -> list[str]:
        return self.engine.catalogue().get(set_name, [])

    def check_set(self, set_name: str) -> str:
        if set_name not in self.engine.catalogue():
            raise InputError(f"Unknown model set {set_name!r}; available: {', '.join(self.engine.catalogue())}.")
        return set_name

    def check_depth(self, depth) -> int:
        if depth not in (1, 2, 3, 4):
            raise InputError(f"The U-Net++ depth must be from 1 to 4, got {depth!r}.")
        return int(depth)

    def current_image(self, example, image_file, mask_file, set_name) -> CurrentImage:
        self.images_decoded += 1
        return CurrentImage(str(example), f"example {example}", self.image, set_name)


@dataclass
class StandInShared:
    app: StandInApp
    set_radio: gr.Radio
    example_dd: gr.Dropdown
    image_file: gr.File
    mask_file: gr.File
    depth_sl: gr.Slider
    session: gr.State
    image_changed: gr.State
    scheduler: FairScheduler = field(default_factory=FairScheduler)
    light: dict = field(default_factory=lambda: {"api_visibility": "private", "concurrency_limit": 4, "concurrency_id": "light"})
    heavy: dict = field(default_factory=lambda: {"concurrency_limit": None, "concurrency_id": "models"})

    @property
    def image_inputs(self) -> list:
        return [self.example_dd, self.image_file, self.mask_file, self.set_radio]

    def on_device(self, fn):
        return on_device(fn, self.scheduler)


def build_tab(config: DemoConfig, image: np.ndarray, set_name: str):
    app = StandInApp(config, image)
    with gr.Blocks() as blocks:
        shared = StandInShared(
            app,
            gr.Radio(list(app.engine.catalogue()), value=set_name),
            gr.Dropdown(["0"], value="0"),
            gr.File(),
            gr.File(),
            gr.Slider(1, 4, value=4, step=1),
            gr.State(SessionCache()),
            gr.State(""),
        )
        tab = inside.build(shared)
    events = {fn.api_name: fn for fn in blocks.fns.values() if fn.fn is not None}
    return app, tab, events


def call(event, *args):
    result = event.fn(*args)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


@pytest.fixture(scope="module")
def shapes_image():
    return render_shapes(0, 0, 64)[0]


@pytest.fixture
def tiny_tab(tiny_config, shapes_image):
    return build_tab(tiny_config(), shapes_image, "shapes")


def test_build_wires_stable_events(tiny_tab):
    _, tab, events = tiny_tab
    assert isinstance(tab, gr.Tab) and tab.id == "inside"
    assert {"inside_look", "inside_relight", "inside_mode", "inside_node", "inside_set", "inside_clear"} <= set(events)
    look = events["inside_look"]
    assert look.concurrency_id == "models" and look.api_visibility == "private"
    assert all(events[name].concurrency_id == "light" for name in ("inside_relight", "inside_mode", "inside_node", "inside_set", "inside_clear"))


@pytest.mark.parametrize("arch", ARCHS)
def test_look_draws_every_architecture(tiny_tab, arch):
    app, _, events = tiny_tab
    state, summary, figure, dropdown, node_md, picture = call(events["inside_look"], "0", None, None, "shapes", arch, 4, "activation")
    view = state.view
    assert isinstance(figure, go.Figure)
    assert len(figure.layout.images) == len(view.nodes)  # one feature map per node
    assert len(figure.layout.shapes) == len(view.nodes)
    assert [value for _, value in dropdown["choices"]] == [name for _, name in inside.node_choices(view)]
    assert dropdown["value"] == "head." + ("x0_4" if arch == "unetpp" else "x_de1" if arch == "unet3p" else "main")
    assert "receptive field" in node_md and picture.ndim == 3 and picture.shape[1] >= 300
    assert f"of {len(view.nodes)} nodes run" in summary
    assert app.images_decoded == 1


def test_depth_relights_the_unetpp_grid_without_running_the_model(tiny_tab):
    app, _, events = tiny_tab
    state, summary, figure, *_ = call(events["inside_look"], "0", None, None, "shapes", "unetpp", 2, "pca")
    assert "L2" in summary
    grey = {shape.line.color for shape, node in zip(figure.layout.shapes, state.view.nodes) if not node.runs}
    assert grey == {GREY}
    faded = [image.opacity for image, node in zip(figure.layout.images, state.view.nodes) if not node.runs]
    assert len(faded) == 12 and set(faded) == {0.3}  # the 9 X(i,j) with i + j > 2 (X(3,0), X(4,0) included) and 3 heads
    relit, summary4, figure4, node_md, _ = call(events["inside_relight"], state, 4, "pca", "x1_2")
    assert relit.view.depth == 4 and "L4" in summary4
    assert sum(not node.runs for node in relit.view.nodes) == 3  # only the deep-supervision heads
    assert "Runs at L4 | yes" in node_md
    assert app.images_decoded == 1
    _, _, _, node_md2, _ = call(events["inside_relight"], state, 1, "pca", "x1_2")
    assert "pruned away (runs from L3)" in node_md2


def test_a_look_at_another_image_is_dropped_and_cleared(tiny_tab):
    """The Inside tab keeps the stale-result rules of every tab: a look whose image the page
    left meanwhile is not shown, and a change of image clears a look at another image."""
    _, _, events = tiny_tab
    session = SessionCache()
    session.show("shapes/0")
    state, *_ = call(events["inside_look"], "0", None, None, "shapes", "unet", 4, "activation", session)
    assert state is not None and session.results["inside"] == "shapes/0"
    assert call(events["inside_clear"], "shapes/0", session) == (gr.skip(),) * 6  # its own image: kept
    cleared = call(events["inside_clear"], "shapes/1", session)
    assert cleared[0] is None and cleared[1] == "" and cleared[3]["choices"] == []
    session.show("shapes/1")  # the page moves on while a look at image 0 runs
    shown_at_start = session.shown
    original = session.watch

    def page_moves_on(current, tab):
        watch = original(current, tab)
        session.show("shapes/2")
        return watch

    session.watch = page_moves_on
    stale = call(events["inside_look"], "0", None, None, "shapes", "unet", 4, "activation", session)
    assert shown_at_start == "shapes/1" and stale[0] == gr.skip() and "the image changed" in stale[1]


def test_node_details(tiny_tab):
    _, _, events = tiny_tab
    unet3p = call(events["inside_look"], "0", None, None, "shapes", "unet3p", 4, "activation")[0]
    text = inside.node_markdown(unet3p.view, "x_de2")
    assert "**5 incoming links:**" in text and "max-pool /2" in text
    assert "Parameters" in text and "FLOPs" in text and "Channels" in text
    deeplab = call(events["inside_look"], "0", None, None, "shapes", "deeplabv3p", 4, "activation")[0]
    pooled = inside.node_markdown(deeplab.view, "aspp.branches.4")
    assert "the whole image" in pooled
    figure, node_md, picture = call(events["inside_node"], deeplab, "aspp.branches.1", "pca")
    assert "rate 6" in node_md
    assert "**Depthwise separable:** depthwise 3x3, rate 6 on each of" in node_md and "`1/C_out + 1/k²` = 1/8 + 1/9 = **0.236**" in node_md
    refine = inside.node_markdown(deeplab.view, "refine.1")
    assert "- Refine dw+pw #1\n" in refine + "\n"  # a link with no operation ends at its source's name
    assert "5 depthwise separable convs" in inside.summary_markdown(deeplab)
    assert picture.shape[1] >= 300
    chosen = [shape for shape in figure.layout.shapes if shape.line.color == "#e6007e"]
    assert len(chosen) == 1


def test_bad_requests_get_clear_messages(tiny_tab):
    _, _, events = tiny_tab
    with pytest.raises(gr.Error, match="U-Net\\+\\+ \\(unetpp\\)"):
        call(events["inside_look"], "0", None, None, "shapes", "segformer", 4, "activation")
    with pytest.raises(gr.Error, match="depth must be from 1 to 4"):
        call(events["inside_look"], "0", None, None, "shapes", "unetpp", 9, "activation")
    with pytest.raises(gr.Error, match="Unknown model set"):
        call(events["inside_look"], "0", None, None, "mars", "unet", 4, "activation")
    assert call(events["inside_relight"], None, 2, "activation", None) == (gr.skip(),) * 5


def test_phone_layout_wraps(tiny_tab):
    _, tab, _ = tiny_tab
    rows = [block for block in tab.children if isinstance(block, gr.Row)]
    assert rows
    for row in rows:
        for child in row.children:
            assert child.min_width is not None and child.min_width <= 300, child


@pytest.mark.parametrize("set_name, size", [("camvid", (180, 240)), ("shapes", (128, 128))])
def test_shipped_models_of_both_sets(set_name, size):
    config = DemoConfig(weights_dir=WEIGHTS_DIR, camvid_dir=None, device="cpu", torch_threads=1, warm_up=False)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    _, _, events = build_tab(config, image, set_name)
    for arch in ARCHS:
        state, summary, *_ = call(events["inside_look"], "0", None, None, set_name, arch, 2, "activation")
        assert state.view.image_size == size
        assert all(node.feature is not None for node in state.view.nodes)


def test_edges_bow_around_the_nodes_they_would_cross():
    box = (0.45, 0.35)
    row = [(column, 0.0, *box) for column in (2.0, 4.0, 6.0)]  # X(0,1), X(0,2), X(0,3) between X(0,0) and X(0,4)
    straight = edge_path((0, 0), (2, -1), row)
    assert straight.tolist() == [[0, 0], [2, -1]]
    curve = edge_path((0, 0), (8, 0), row)
    assert curve[0].tolist() == [0, 0] and curve[-1].tolist() == [8, 0]
    for column, y, half_w, half_h in row:
        near = curve[np.abs(curve[:, 0] - column) < half_w]
        assert (np.abs(near[:, 1] - y) >= half_h).all()  # the curve passes above or below, not through
    assert (curve[:, 1] >= 0).all()  # above the row when both sides are free
    above = [(4.0, 0.6, *box)]  # a node in the way above: the curve takes the free side
    assert (edge_path((0, 0), (8, 0), row + above)[:, 1] <= 0).all()
