"""The graph of the "Inside the network" tab (:mod:`demo.tabs.inside`) as a Plotly figure:
every node of a :class:`segmodels.teach.look_inside.NetworkView` drawn with its feature map at its
grid position, its edges straight or bowed around the nodes they would run behind."""

from __future__ import annotations

import base64
import io
import math
import re

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from segmodels.teach.look_inside import NetworkView, Node

from .pictures import heat_colours

KIND_COLOURS = {"encoder": "#1f77b4", "decoder": "#ff7f0e", "aspp": "#2ca02c", "pooling": "#17becf", "projection": "#9467bd", "refine": "#d62728", "head": "#444444"}
GREY = "#c8c8c8"
NODE_BOX = (0.9, 0.7)  # largest width and height of a node's image, in grid units
HEAD_SCALE = 0.5
FIGURE_THUMBNAIL = 64  # longest side of the images embedded in the figure
ROW_HEIGHT_PX = 100
MAX_HEIGHT_PX = 560
EDGE_CLEARANCE = 0.45  # grid units between a curved edge and the centre of a node it bows around
MAX_BOW = 1.6
CURVE_POINTS = 17


def count_text(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if value >= scale:
            return f"{value / scale:.2f}{suffix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def depth_name(depth: int | None) -> str:
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
        lines.append(f"{count_text(node.feature.flops, 'FLOPs')}")
    lines.append(f"{node.info.parameters:,} parameters")
    lines.append(f"receptive field {field_text(node.info.receptive_field)}")
    if not node.runs:
        lines.append(f"does not run{depth_name(view.depth)}")
    return "<br>".join(lines)


def field_text(size: float) -> str:
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


__all__ = ["GREY", "count_text", "depth_name", "edge_path", "field_text", "graph_figure", "node_picture"]
