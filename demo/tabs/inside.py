"""The "Inside the network" tab (issue 13): the real graph of the chosen model, every node
drawn with its feature map on the current image (:mod:`segmodels.teach.look_inside`), lit or grey
by the U-Net++ pruning depth, and one node's shape, channels, parameters, FLOPs and
receptive field on demand.

``look`` and the presenters (``graph_figure``, ``node_markdown``, ``node_image``,
``summary_markdown``) are plain functions, tested without a browser; ``build`` wires them."""

from __future__ import annotations

import base64
import io
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np
import plotly.graph_objects as go
from PIL import Image

from segmodels import ARCH_NAMES, zoo
from segmodels.teach.look_inside import NetworkView, Node, look_inside
from segmodels.teach.network_graph import SeparableConvInfo

from .. import explanations
from ..errors import InputError, user_errors
from ..figures import heat_colours

if TYPE_CHECKING:
    from ..context import Shared
    from ..core import App

MODES = {"Mean |activation|": "activation", "PCA colour (3 components as RGB)": "pca"}
KIND_COLOURS = {"encoder": "#1f77b4", "decoder": "#ff7f0e", "aspp": "#2ca02c", "pooling": "#17becf", "projection": "#9467bd", "refine": "#d62728", "head": "#444444"}
GREY = "#c8c8c8"
NODE_BOX = (0.9, 0.7)  # largest width and height of a node's image, in grid units
HEAD_SCALE = 0.5
FIGURE_THUMBNAIL = 64  # longest side of the images embedded in the figure
DETAIL_WIDTH = 384  # the selected node's map is enlarged (nearest) to about this width
ROW_HEIGHT_PX = 100
MAX_HEIGHT_PX = 560
EDGE_CLEARANCE = 0.45  # grid units between a curved edge and the centre of a node it bows around
MAX_BOW = 1.6
CURVE_POINTS = 17

INTRO = """Every box is a feature map the network really computes on the image above, taken
with hooks from **one forward pass**: encoder stages X(i,0), decoder nodes, the heads.
Lines are the connections that feed each node. *Mean |activation|* shows where a node
responds; *PCA colour* shows its first three principal components as red, green and blue
(pixels of the same colour have similar feature vectors). With **U-Net++**, the depth slider
relights the grid: at depth d only the nodes X(i,j) with i + j <= d run; the grey ones are
pruned away. Pick a node below for its shape, parameters, FLOPs and receptive field (on a
small screen, zoom into the graph or use the list)."""


@dataclass(frozen=True)
class InsideResult:
    """One "Look inside" request: the view and what it was computed for."""

    view: NetworkView
    set_name: str
    arch: str
    image_label: str


def look(app: App, example, image_file, mask_file, set_name, arch, depth) -> InsideResult:
    """Check the request, decode the image once and run the chosen model with hooks.

    The model is the shipped one as trained (batch norms not folded), so that every
    parameter the paper counts belongs to a node."""
    set_name = app.check_set(set_name)
    archs = app.archs(set_name)
    if arch not in archs:
        allowed = ", ".join(f"{ARCH_NAMES.get(a, a)} ({a})" for a in archs) or "none"
        raise InputError(f"Choose one of the architectures of this model set: {allowed}; got {str(arch)[:60]!r}.")
    depth = app.check_depth(depth)
    current = app.current_image(example, image_file, mask_file, set_name)
    engine = app.engine
    with engine.benchmarker.busy(), engine.guard():
        engine.model(set_name, arch)  # a clear message when its files cannot be used
        model = zoo.load_model(f"{set_name}/{arch}", engine.device, app.config.weights_dir)
        depths = model.pruning_depths
        view = look_inside(model, current.image, depth=min(depth, max(depths)) if depths else None)
    return InsideResult(view, set_name, arch, current.label)


# ---------------------------------------------------------------------------- presenters


def _count(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def _depth_name(depth: int | None) -> str:
    return "" if depth is None else f" at L{depth}"


def node_picture(node: Node, mode: str) -> np.ndarray | None:
    """The node's thumbnail as RGB: heat colours for mean |activation|, else the PCA colours."""
    if node.feature is None:
        return None
    return heat_colours(node.feature.activation / 255.0) if mode == "activation" else node.feature.pca


def _data_uri(picture: np.ndarray, side: int) -> str:
    image = Image.fromarray(picture)
    image.thumbnail((side, side), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _box(node: Node, aspect: float) -> tuple[float, float]:
    width, height = NODE_BOX
    width, height = (width, width * aspect) if width * aspect <= height else (height / aspect, height)
    scale = HEAD_SCALE if node.info.kind == "head" else 1.0
    return width * scale, height * scale


def _rich(label: str) -> str:
    """Plotly markup for a label: ``X_De^3`` -> X<sub>De</sub><sup>3</sup>."""
    return re.sub(r"\^(\w+)", r"<sup>\1</sup>", re.sub(r"_([A-Za-z]+)", r"<sub>\1</sub>", label))


def _hover(node: Node, view: NetworkView) -> str:
    lines = [f"<b>{_rich(node.info.label)}</b> ({node.info.kind})"]
    if node.feature is not None:
        channels, height, width = node.feature.shape
        lines.append(f"{channels} x {height} x {width}, stride {node.feature.stride:g}")
        lines.append(f"{_count(node.feature.flops, 'FLOPs')}")
    lines.append(f"{node.info.parameters:,} parameters")
    lines.append(f"receptive field {_field(node.info.receptive_field)}")
    if not node.runs:
        lines.append(f"does not run{_depth_name(view.depth)}")
    return "<br>".join(lines)


def _field(size: float) -> str:
    return "the whole image" if math.isinf(size) else f"{size:g} px"


def _blocking(start, end, boxes) -> list[float]:
    """Where (as a fraction of the way) the straight line from ``start`` to ``end`` crosses
    one of ``boxes`` (centre x, centre y, half width, half height)."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    fractions = []
    for cx, cy, half_w, half_h in boxes:
        t = ((cx - x0) * dx + (cy - y0) * dy) / (dx * dx + dy * dy)
        if 0.05 < t < 0.95 and abs(x0 + t * dx - cx) < half_w and abs(y0 + t * dy - cy) < half_h:
            fractions.append(t)
    return fractions


def _inside(points: np.ndarray, boxes) -> int:
    return sum(int(((np.abs(points[:, 0] - cx) < w) & (np.abs(points[:, 1] - cy) < h)).sum()) for cx, cy, w, h in boxes)


def edge_path(start, end, boxes) -> np.ndarray:
    """Points of an edge: a straight line, or, where that would run behind other nodes
    (U-Net++'s dense skips along a row, U-Net 3+'s links along the decoder's diagonal), a
    quadratic curve bowed just enough to clear them, on the side where it crosses fewer."""
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    fractions = _blocking(start, end, boxes)
    if not fractions:
        return np.stack([start, end])
    bow = min(MAX_BOW, max(EDGE_CLEARANCE / (2 * t * (1 - t)) for t in fractions))
    direction = end - start
    normal = np.array([-direction[1], direction[0]]) / np.hypot(*direction)
    t = np.linspace(0, 1, CURVE_POINTS)[:, None]
    candidates = []
    for side in (1, -1):
        control = (start + end) / 2 + side * bow * normal
        curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end
        candidates.append((_inside(curve[1:-1], boxes), side == -1, curve))
    return min(candidates, key=lambda candidate: candidate[:2])[2]


def graph_figure(view: NetworkView, mode: str = "activation", selected: str | None = None) -> go.Figure:
    """The graph: each node's feature map at its grid position (row down = coarser), framed in
    its kind's colour when it runs and faded and grey when it does not; lines for the edges."""
    height, width = view.image_size
    aspect = height / width
    nodes = {node.info.name: node for node in view.nodes}
    position = {name: (node.info.column, -node.info.row) for name, node in nodes.items()}
    boxes = {name: (*position[name], *(size / 2 for size in _box(node, aspect))) for name, node in nodes.items()}
    fig = go.Figure()
    for lit in (False, True):
        xs, ys, mid_x, mid_y, texts = [], [], [], [], []
        for edge in view.edges:
            if (nodes[edge.source].runs and nodes[edge.target].runs) != lit:
                continue
            others = [box for name, box in boxes.items() if name not in (edge.source, edge.target)]
            points = edge_path(position[edge.source], position[edge.target], others)
            xs += [*points[:, 0], None]
            ys += [*points[:, 1], None]
            middle = points[len(points) // 2] if len(points) > 2 else points.mean(0)
            mid_x.append(middle[0])
            mid_y.append(middle[1])
            texts.append(f"{_rich(nodes[edge.source].info.label)} → {_rich(nodes[edge.target].info.label)}" + (f"<br>{edge.operation}" if edge.operation else ""))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#555" if lit else GREY, width=1.6 if lit else 1, dash=None if lit else "dot"), hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=mid_x, y=mid_y, mode="markers", marker=dict(size=7, color="#555" if lit else GREY, opacity=0.5), hovertext=texts, hoverinfo="text", showlegend=False))
    for name, node in nodes.items():
        x, y = position[name]
        box_w, box_h = _box(node, aspect)
        picture = node_picture(node, mode)
        if picture is not None:
            fig.add_layout_image(source=_data_uri(picture, FIGURE_THUMBNAIL), x=x, y=y, xref="x", yref="y", sizex=box_w, sizey=box_h, xanchor="center", yanchor="middle",
                                 sizing="stretch", opacity=1.0 if node.runs else 0.3, layer="above")
        colour = KIND_COLOURS.get(node.info.kind, "#7f7f7f") if node.runs else GREY
        chosen = name == selected
        fig.add_shape(type="rect", x0=x - box_w / 2, x1=x + box_w / 2, y0=y - box_h / 2, y1=y + box_h / 2, line=dict(color="#e6007e" if chosen else colour, width=4 if chosen else 2), layer="above")
        fig.add_annotation(x=x, y=y - box_h / 2, text=_rich(node.info.label), showarrow=False, yanchor="top", font=dict(size=11, color="#222" if node.runs else "#999"))
    names = list(nodes)
    fig.add_trace(go.Scatter(
        x=[position[n][0] for n in names], y=[position[n][1] for n in names], mode="markers",
        marker=dict(size=26, symbol="square", opacity=0.01), hovertext=[_hover(nodes[n], view) for n in names], hoverinfo="text", customdata=names, showlegend=False,
    ))
    rows = [node.info.row for node in view.nodes]
    fig.update_xaxes(visible=False, range=[min(n.info.column for n in view.nodes) - 0.6, max(n.info.column for n in view.nodes) + 0.6])
    fig.update_yaxes(visible=False, scaleanchor="x", constrain="domain", constraintoward="top", range=[-max(rows) - 0.7, -min(rows) + 0.5])
    fig.update_layout(height=min(MAX_HEIGHT_PX, int(ROW_HEIGHT_PX * (max(rows) - min(rows) + 1.4))), margin=dict(l=5, r=5, t=10, b=5), hovermode="closest", dragmode="pan")
    return fig


def default_node(view: NetworkView) -> str:
    """The node first shown in detail: the head that runs (the model's output)."""
    heads = [node for node in view.nodes if node.info.kind == "head" and node.runs]
    return (heads[0] if heads else view.nodes[-1]).info.name


def node_choices(view: NetworkView) -> list[tuple[str, str]]:
    """(label, name) of every node, along the data flow."""
    ordered = sorted(view.nodes, key=lambda node: (node.info.column, node.info.row))
    return [(f"{node.info.label} ({node.info.kind})", node.info.name) for node in ordered]


def _first_depth(view: NetworkView, name: str) -> int | None:
    return next((depth for depth in view.pruning_depths if name in view.running[depth]), None)


def node_markdown(view: NetworkView, name: str) -> str:
    """The selected node: what it computes, its output, parameters, FLOPs, receptive field,
    whether it runs, and the links into it."""
    node = view.node(name)
    info = node.info
    height, width = view.image_size
    rows = [f"### {info.label}", f"*{info.kind}*: {info.detail}", "", "| | |", "|---|---|"]
    if node.feature is not None:
        channels, map_h, map_w = node.feature.shape
        rows.append(f"| Output | {channels} x {map_h} x {map_w} (channels x height x width), stride {node.feature.stride:g} |")
        rows.append(f"| Channels | {channels} |")
        rows.append(f"| FLOPs on this image | {_count(node.feature.flops)} (a multiply-add counts 2) |")
    rows.append(f"| Parameters | {info.parameters:,} |")
    rows.append(f"| Modules | {', '.join(f'`{name}`' for name in info.modules)} |")
    field = info.receptive_field
    if math.isinf(field):
        share = ""
    elif field >= width:
        share = f" (more than the image width, {width} px: the model pads)"
    else:
        share = f" ({field / width:.0%} of the image width, {width} px)"
    rows.append(f"| Theoretical receptive field | {_field(field)}{share} |")
    if view.depth is not None:
        first = _first_depth(view, name)
        if node.runs:
            state = "yes"
        elif first is not None:
            state = f"no: pruned away (runs from L{first})"
        else:
            state = "no: only in training (deep supervision)"
        rows.append(f"| Runs at L{view.depth} | {state} |")
    elif not node.runs:
        rows.append("| Runs at inference | no: only in training (deep supervision) |")
    for conv in info.separable:
        rows += ["", f"**Depthwise separable:** {_separable_saving(conv)}."]
    incoming = view.incoming(name)
    if incoming:
        rows += ["", f"**{len(incoming)} incoming link{'s' if len(incoming) > 1 else ''}:**"]
        rows += [f"- {view.node(edge.source).info.label}" + (f": {edge.operation}" if edge.operation else "") for edge in incoming]
    if math.isinf(field):
        rows += ["", "Global average pooling (ASPP's image-pooling branch) lets every pixel from here on see the whole image."]
    return "\n".join(rows)


def _separable_saving(conv: SeparableConvInfo) -> str:
    """What a depthwise separable conv costs against the dense conv it replaces."""
    k = conv.kernel_size
    rate = f", rate {conv.dilation}" if conv.dilation > 1 else ""
    return (f"depthwise {k}x{k}{rate} on each of {conv.in_channels} channels, then pointwise 1x1 to {conv.out_channels}: "
            f"{conv.weights:,} weights, where a dense {k}x{k} conv from {conv.in_channels} to {conv.out_channels} channels has {conv.dense_weights:,}. "
            f"It needs `1/C_out + 1/k²` = 1/{conv.out_channels} + 1/{k * k} = **{conv.cost_ratio:.3f}** of the dense conv's weights and multiply-adds")


def node_image(view: NetworkView, name: str, mode: str = "activation") -> np.ndarray | None:
    """The selected node's map, enlarged without smoothing so its pixels stay visible."""
    picture = node_picture(view.node(name), mode)
    if picture is None:
        return None
    factor = max(1, DETAIL_WIDTH // picture.shape[1])
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def summary_markdown(result: InsideResult) -> str:
    view = result.view
    height, width = view.image_size
    running = [node for node in view.nodes if node.runs]
    title = f"**{ARCH_NAMES.get(result.arch, result.arch)}{_depth_name(view.depth)}** on {result.image_label} ({height} x {width})"
    lines = [f"{title}: {len(running)} of {len(view.nodes)} nodes run at inference, {_count(view.flops, 'FLOPs')} and {view.parameters / 1e6:.2f} M parameters."]
    if view.pruning_depths:
        full = view.at_depth(max(view.pruning_depths))
        lines.append(f"The full network (L{max(view.pruning_depths)}) needs {_count(full.flops, 'FLOPs')} and {full.parameters / 1e6:.2f} M parameters. "
                     f"Grey nodes do not run{_depth_name(view.depth)}; their maps come from the same pass of the full network "
                     "(a node computes the same map at every depth that runs it).")
    elif len(running) < len(view.nodes):
        lines.append("Grey heads run only in training (deep supervision).")
    separable = [conv for node in running for conv in node.info.separable]
    if separable:
        weights, dense = sum(conv.weights for conv in separable), sum(conv.dense_weights for conv in separable)
        lines.append(f"Its {len(separable)} depthwise separable convs have {weights:,} weights where dense ones would have {dense:,} "
                     f"({weights / dense:.3f} of them; each one costs `1/C_out + 1/k²` of a dense conv).")
    lines.append(f"One pass with hooks and the summaries took {view.seconds:.2f} s.")
    return " ".join(lines)


# ---------------------------------------------------------------------------- the tab


def build(shared: Shared) -> gr.Tab:
    """The tab, its components and its events (see the module docstring)."""
    app = shared.app
    set_name = shared.set_radio.value
    archs = app.archs(set_name) if set_name else []
    keep = (gr.skip(),) * 5

    with gr.Tab("Inside the network", id="inside") as tab:
        gr.Markdown(f"{INTRO} {explanations.inside_thumbnails()}")
        with gr.Row(equal_height=True):  # columns, so that they wrap on a phone
            with gr.Column(min_width=200):
                arch_dd = gr.Dropdown([(ARCH_NAMES[a], a) for a in archs], value=archs[0] if archs else None, label="Architecture")
            with gr.Column(min_width=260):
                mode_radio = gr.Radio(list(MODES.items()), value="activation", label="Each node shows")
            with gr.Column(min_width=160):
                look_btn = gr.Button("Look inside", variant="primary", interactive=bool(archs), size="lg")
        summary_md = gr.Markdown()
        graph_plot = gr.Plot(label="The network's graph", show_label=False)
        with gr.Row(equal_height=False):
            with gr.Column(min_width=280):
                node_dd = gr.Dropdown([], label="Node", interactive=True)
                node_md = gr.Markdown()
            with gr.Column(min_width=280):
                node_img = gr.Image(label="Its feature map", interactive=False, format="png", height=300, buttons=["fullscreen"])
        view_state = gr.State(None)

        @user_errors
        def on_look(example, image_file, mask_file, set_name, arch, depth, mode):
            result = look(app, example, image_file, mask_file, set_name, arch, depth)
            name = default_node(result.view)
            choices = node_choices(result.view)
            return (result, summary_markdown(result), graph_figure(result.view, mode, name), gr.update(choices=choices, value=name),
                    node_markdown(result.view, name), node_image(result.view, name, mode))

        @user_errors
        def on_depth(result: InsideResult | None, depth, mode, name):
            if result is None or not result.view.pruning_depths:
                return keep
            depth = app.check_depth(depth)
            view = result.view.at_depth(min(depth, max(result.view.pruning_depths)))
            relit = InsideResult(view, result.set_name, result.arch, result.image_label)
            name = name if name in {n.info.name for n in view.nodes} else default_node(view)
            return relit, summary_markdown(relit), graph_figure(view, mode, name), node_markdown(view, name), node_image(view, name, mode)

        @user_errors
        def on_mode(result: InsideResult | None, mode, name):
            if result is None or name is None:
                return gr.skip(), gr.skip()
            return graph_figure(result.view, mode, name), node_image(result.view, name, mode)

        @user_errors
        def on_node(result: InsideResult | None, name, mode):
            if result is None or name is None:
                return gr.skip(), gr.skip(), gr.skip()
            return graph_figure(result.view, mode, name), node_markdown(result.view, name), node_image(result.view, name, mode)

        def on_set(set_name):
            choices = app.archs(set_name) if set_name else []
            return gr.update(choices=[(ARCH_NAMES[a], a) for a in choices], value=choices[0] if choices else None), gr.update(interactive=bool(choices))

        heavy = {"api_visibility": "private"} | shared.heavy
        look_btn.click(
            shared.on_device(on_look),
            [*shared.image_inputs, arch_dd, shared.depth_sl, mode_radio],
            [view_state, summary_md, graph_plot, node_dd, node_md, node_img],
            api_name="inside_look",
            **heavy,
        )
        shared.depth_sl.change(on_depth, [view_state, shared.depth_sl, mode_radio, node_dd], [view_state, summary_md, graph_plot, node_md, node_img],
                               show_progress="hidden", api_name="inside_relight", **shared.light)
        mode_radio.change(on_mode, [view_state, mode_radio, node_dd], [graph_plot, node_img], show_progress="hidden", api_name="inside_mode", **shared.light)
        node_dd.input(on_node, [view_state, node_dd, mode_radio], [graph_plot, node_md, node_img], show_progress="hidden", api_name="inside_node", **shared.light)
        shared.set_radio.change(on_set, shared.set_radio, [arch_dd, look_btn], show_progress="hidden", api_name="inside_set", **shared.light)
    return tab
