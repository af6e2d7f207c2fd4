"""Plotly figures and results tables of the dashboard (no Gradio here, no model code); the
images are in :mod:`demo.pictures`."""

from __future__ import annotations

import html
import math
import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmodels.losses import cross_entropy_curve, focal_curve

from .catalogue import MODEL_COLOURS

FONT = dict(size=15)
MODEBAR_REMOVED = ["zoom", "pan", "select", "lasso", "zoomin", "zoomout", "autoscale"]  # a narrow toolbar, at the side, off the title


def _layout(fig: go.Figure, title: str, height: int = 420, subtitle: str | None = None) -> go.Figure:
    """Title and subtitle (wrapped to short lines, so a phone shows them whole) at the top
    left; the legend in rows at the very bottom, under the axis title, where it covers
    neither the plot nor its labels (Plotly grows the bottom margin for its rows)."""
    lines = textwrap.wrap(subtitle, 56, break_on_hyphens=False) if subtitle else []
    heading = dict(text=title, x=0.01, xanchor="left", yref="container", y=1, yanchor="top", pad=dict(t=10), font=dict(size=18))
    if lines:
        heading["subtitle"] = dict(text="<br>".join(lines), font=dict(size=13, color="#555"))
    fig.update_layout(title=heading, font=FONT, height=height + 17 * len(lines), modebar=dict(orientation="v", remove=MODEBAR_REMOVED), margin=dict(l=60, r=20, t=52 + 17 * len(lines), b=50),
                      legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", xanchor="left", x=0, font=dict(size=13)))
    return fig


def _data_range(values: np.ndarray, pad_share: float = 0.2, minimum_pad: float = 0.05) -> list[float]:
    """An axis range around ``values`` with room for markers and labels: from the data, not
    fixed, so close scores stay apart and a score near 1 keeps its label in the plot."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [0.0, 1.05]
    low, high = float(finite.min()), float(finite.max())
    pad = max(minimum_pad, pad_share * (high - low))
    return [max(0.0, low - pad), high + pad]


def empty_figure(message: str, height: int = 320) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=16))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


def model_colour(name: str) -> str:
    base = name.split(" L")[0]
    return MODEL_COLOURS.get(base, "#7f7f7f")


# --------------------------------------------------------------------------- tables


def _cell_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return str(value)


def table_html(table: pd.DataFrame, label: str) -> str:
    """A results table as HTML that fits any screen (CSS ``.results-table`` in :mod:`demo.ui`):
    on a desktop a table whose cells wrap between words, never inside one; on a phone a card
    per row, each value beside its column's name (the cell's ``data-label``). Every column of
    ``table`` appears in both, so a new column is a new field of the rows."""
    head = "".join(f"<th scope='col'>{html.escape(str(column))}</th>" for column in table.columns)
    rows = []
    for values in table.itertuples(index=False):
        cells = []
        for index, (column, value) in enumerate(zip(table.columns, values)):
            numeric = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            tag = "th scope='row'" if index == 0 else "td"
            cells.append(f"<{tag} data-label='{html.escape(str(column))}'{' class=num' if numeric else ''}>{html.escape(_cell_text(value))}</{tag.split()[0]}>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<div class='results-table' role='region' aria-label='{html.escape(label)}'><p class='results-label'>{html.escape(label)}</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


# --------------------------------------------------------------------------- charts


NARROWEST_PLOT = (280, 260)  # px of a chart's plot area on a 390 px phone: labels placed apart there stay apart wider


def _log_range(values: np.ndarray, pad: float = 0.15) -> list[float]:
    """A log axis's range (in decades) around positive ``values``."""
    logs = np.log10(values[np.isfinite(values) & (values > 0)])
    if logs.size == 0:
        return [-1.0, 1.0]
    low, high = float(logs.min()), float(logs.max())
    pad = max(pad, 0.3 - (high - low) / 2)
    return [low - pad, high + pad]


def log_ticks(x_range: list[float]) -> list[float]:
    """Tick values 1, 2, 5 times each power of ten inside a log axis's range (in decades), so
    no lone minor tick is labelled "2" without its decade."""
    ticks = [mantissa * 10.0**exponent for exponent in range(math.floor(x_range[0]), math.ceil(x_range[1]) + 1) for mantissa in (1, 2, 5)]
    return [tick for tick in ticks if x_range[0] <= math.log10(tick) <= x_range[1]]


def label_offsets(x: list[float], y: list[float], texts: list[str], x_range: list[float], y_range: list[float],
                  others: list[tuple[float, float]] = ()) -> list[tuple[int, int]]:
    """Pixel offsets (dx, dy) of each point's label from its point, chosen greedily so no two
    labels overlap each other or a marker (the points and ``others``) on the narrowest screen
    (:data:`NARROWEST_PLOT`; wider, points only move further apart). Axis units (decades on a
    log axis)."""
    width, height = NARROWEST_PLOT

    def pixels(a: float, b: float) -> tuple[float, float]:
        return (a - x_range[0]) / (x_range[1] - x_range[0]) * width, (1 - (b - y_range[0]) / (y_range[1] - y_range[0])) * height

    boxes = [(a - 9, b - 9, a + 9, b + 9) for a, b in (pixels(*point) for point in [*zip(x, y), *others])]  # the markers
    offsets = []
    for (a, b), text in zip((pixels(*point) for point in zip(x, y)), texts):
        half_w, half_h = 3.8 * len(text) + 4, 9
        candidates = [(0, -22), (0, 22), (half_w + 12, 0), (-half_w - 12, 0), (0, -44), (0, 44), (half_w + 12, -26), (-half_w - 12, 26), (half_w + 12, 26), (-half_w - 12, -26), (0, -66), (0, 66)]
        for dx, dy in candidates:
            box = (a + dx - half_w, b + dy - half_h, a + dx + half_w, b + dy + half_h)
            if all(box[2] <= o[0] or o[2] <= box[0] or box[3] <= o[1] or o[3] <= box[1] for o in boxes):
                break
        boxes.append(box)
        offsets.append((dx, dy))
    return offsets


def _label_points(fig: go.Figure, x: list[float], y: list[float], texts: list[str], colours: list[str], x_range: list[float], y_range: list[float]) -> None:
    """Each point's name beside it (:func:`label_offsets`, every marker of ``fig`` avoided), a
    thin line to the point where the label had to move away from it; x on a log axis."""
    others = [(math.log10(a), b) for trace in fig.data for a, b in zip(trace.x, trace.y) if a and a > 0 and b is not None and not pd.isna(b)]
    placed = label_offsets([math.log10(v) for v in x], y, texts, x_range, y_range, others)
    for value_x, value_y, text, colour, (dx, dy) in zip(x, y, texts, colours, placed):
        far = abs(dy) > 22 or (dx != 0 and dy != 0)
        fig.add_annotation(x=math.log10(value_x), y=value_y, text=html.escape(text), ax=dx, ay=dy, showarrow=far, arrowhead=0, arrowwidth=1, arrowcolor=colour,
                           xshift=0 if far else dx, yshift=0 if far else -dy, font=dict(size=13, color=colour), bgcolor="rgba(255,255,255,0.8)")


def miou_cost_figure(table: pd.DataFrame, has_gt: bool) -> go.Figure:
    """mIoU against compute: GFLOPs per frame on a log axis (the cost on any machine; latency
    stays in the table and the hover, it depends on the machine and its load), one colour per
    model, each point named beside it; filled: mIoU on this image (when it has ground truth),
    hollow: the model card's test mIoU (its validation mIoU for a set without test records)."""
    rows = table[table["GFLOPs"].notna() & (table["GFLOPs"] > 0)] if "GFLOPs" in table else table.iloc[:0]
    if rows.empty:
        return empty_figure("No model ran.")
    card_column, card_kind = ("mIoU (test)", "test set (card)") if "mIoU (test)" in rows and rows["mIoU (test)"].notna().any() else ("mIoU (card, val set)", "validation set (card)")
    columns = (["mIoU (this image)"] if has_gt else []) + [card_column]
    fig = go.Figure()
    labelled = []
    for _, row in rows.iterrows():
        points = [(column, row[column]) for column in columns if not pd.isna(row[column])]
        if not points:
            continue
        colour = model_colour(row["Model"])
        latency = "" if pd.isna(row.get("Latency (ms)")) else f"<br>latency {row['Latency (ms)']:.1f} ms here{' (doubtful)' if str(row.get('Latency from', '')).startswith('⚠') else ''}"
        fig.add_trace(go.Scatter(
            x=[row["GFLOPs"]] * len(points), y=[value for _, value in points], name=row["Model"], mode="markers", cliponaxis=False,
            marker=dict(size=15, color=colour, symbol=["circle" if c == "mIoU (this image)" else "circle-open" for c, _ in points], line=dict(width=2.5, color=colour), opacity=0.85),
            hovertemplate=f"{row['Model']}<br>mIoU %{{y:.3f}}<br>%{{x:.2f}} GFLOPs{latency}<extra></extra>",
        ))
        labelled.append((row["GFLOPs"], points[0][1], row["Model"], colour))
    values = rows[columns].to_numpy(dtype=float).ravel()
    x_range, y_range = _log_range(rows["GFLOPs"].to_numpy(dtype=float)), _data_range(values, pad_share=0.35, minimum_pad=0.02)
    _label_points(fig, *map(list, zip(*labelled)), x_range, y_range)
    fig.update_xaxes(title="GFLOPs per frame (log scale)", type="log", range=x_range, tickvals=log_ticks(x_range), automargin=True)
    fig.update_yaxes(title="mIoU", range=y_range, automargin=True)
    kinds = f"filled: this image · hollow: {card_kind}" if has_gt else f"{card_kind}: no ground truth here"
    return _layout(fig, "mIoU vs compute", subtitle=f"{kinds} · latency on this machine: table and hover")


def per_class_figure(table: pd.DataFrame, class_names: tuple[str, ...], source: str) -> go.Figure:
    """Grouped horizontal bars: the IoU of every class (one row each, all named, on a phone
    too), one bar per model."""
    columns = [f"IoU {c}" for c in class_names]
    rows = table[table[columns].notna().any(axis=1)] if len(table) else table
    if rows.empty:
        return empty_figure("No per-class IoU: no model ran or nothing to compare with.")
    fig = go.Figure()
    for _, row in rows.iloc[::-1].iterrows():  # the legend's first model drawn on top of each group
        fig.add_trace(go.Bar(y=list(class_names), x=[row[c] for c in columns], name=row["Model"], orientation="h", marker_color=model_colour(row["Model"]),
                             hovertemplate=f"{row['Model']}<br>%{{y}}: IoU %{{x:.3f}}<extra></extra>"))
    fig.update_xaxes(title="IoU", range=[0, 1.0], automargin=True)
    fig.update_yaxes(autorange="reversed", automargin=True, tickmode="array", tickvals=list(class_names))
    fig.update_layout(barmode="group", bargap=0.25, legend_traceorder="reversed")
    return _layout(fig, "Per-class IoU", height=140 + len(class_names) * (8 + 7 * len(rows)), subtitle=f"{source}; no bar = class absent from truth and prediction")


def pruning_figure(table: pd.DataFrame) -> go.Figure:
    """The pruning trade-off: mIoU against GFLOPs per frame (log scale), one point per depth,
    each named beside it."""
    fig = go.Figure()
    specs = [("mIoU (this image)", "this image", "solid"), ("mIoU (test)", "test set (card)", "dot"), ("mIoU (card, val set)", "validation set (card)", "dash")]
    values = []
    for column, label, dash in specs:
        if column in table and table[column].notna().any():
            values.append(table[column].to_numpy(dtype=float))
            fig.add_trace(
                go.Scatter(
                    x=table["GFLOPs"],
                    y=table[column],
                    mode="lines+markers",
                    name=label,
                    line=dict(dash=dash, width=3),
                    marker=dict(size=12),
                    cliponaxis=False,
                    customdata=table[["Depth", "Latency (ms)"]].to_numpy(),
                    hovertemplate="%{customdata[0]}<br>mIoU %{y:.3f}<br>%{x:.2f} GFLOPs<br>latency %{customdata[1]:.1f} ms here<extra></extra>",
                )
            )
    if not fig.data:
        return empty_figure("No mIoU to plot: this image has no ground truth and the card no pruning results.")
    x_range, y_range = _log_range(table["GFLOPs"].to_numpy(dtype=float)), _data_range(np.concatenate(values), pad_share=0.3, minimum_pad=0.02)
    first = fig.data[0]
    _label_points(fig, list(first.x), list(first.y), list(table["Depth"]), ["#333"] * len(table), x_range, y_range)
    fig.update_xaxes(title="GFLOPs per frame (log scale)", type="log", range=x_range, tickvals=log_ticks(x_range), automargin=True)
    fig.update_yaxes(title="mIoU", range=y_range, automargin=True)
    return _layout(fig, "Pruning trade-off", subtitle="a shallower network costs less but is usually less accurate · latency on this machine: table and hover")


def receptive_field_figure(traces: dict[str, pd.DataFrame]) -> go.Figure:
    """Theoretical receptive field (input pixels) of every conv / pool layer, in the order the
    layers run; global layers (ASPP image pooling) are drawn at the top as stars."""
    fig = go.Figure()
    finite_max = max([float(df.loc[np.isfinite(df["Receptive field (px)"]), "Receptive field (px)"].max()) for df in traces.values() if len(df)] + [1.0])
    top = finite_max * 1.5
    for name, df in traces.items():
        sizes = df["Receptive field (px)"].to_numpy(dtype=float)
        shown = np.where(np.isfinite(sizes), sizes, top)
        hover = [
            f"{name}<br>#{i} {layer}<br>{op} k{k} s{s} d{d}<br>receptive field: {'whole image' if not math.isfinite(r) else f'{r:.0f} px'}"
            for i, layer, op, k, s, d, r in zip(df["Layer"], df["Module"], df["Op"], df["Kernel"], df["Stride"], df["Dilation"], sizes)
        ]
        fig.add_trace(
            go.Scatter(
                x=df["Layer"],
                y=shown,
                mode="lines+markers",
                name=name,
                line=dict(color=model_colour(name), width=2),
                marker=dict(size=[12 if not math.isfinite(r) else 5 for r in sizes], symbol=["star" if not math.isfinite(r) else "circle" for r in sizes]),
                hovertext=hover,
                hoverinfo="text",
            )
        )
    fig.add_hline(y=top, line=dict(dash="dot", color="#999"), annotation_text="global (whole image)", annotation_position="top left")
    fig.update_xaxes(title="layer (in execution order)")
    fig.update_yaxes(title="pixels (log scale)", type="log")
    return _layout(fig, "Theoretical receptive field by layer", height=480, subtitle="input pixels each layer sees; hover a point for the layer; stars = global pooling")


def dilation_figure(rates: list[int], aspp: list[int], output_stride: int) -> go.Figure:
    """A 3x3 kernel at each dilation rate on the pixel grid: 9 taps spread over (2r + 1) x
    (2r + 1) pixels; three rates a row, so each stays large enough on a phone."""
    columns = min(3, len(rates))
    rows = math.ceil(len(rates) / columns)
    titles = [f"rate {r}{' (ASPP)' if r in aspp else ''}<br>{2 * r + 1}x{2 * r + 1} px" for r in rates]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, rate in enumerate(rates):
        row, col = divmod(i, columns)
        colour = "#d62728" if rate in aspp else "#1f77b4"
        half = rate + 1.5
        axis = "" if i == 0 else str(i + 1)
        fig.add_shape(type="rect", x0=-rate - 0.5, x1=rate + 0.5, y0=-rate - 0.5, y1=rate + 0.5, line=dict(color="#777", dash="dot", width=1.5), xref=f"x{axis}", yref=f"y{axis}")
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = rate * dy, rate * dx
                fig.add_shape(type="rect", x0=x - 0.5, x1=x + 0.5, y0=y - 0.5, y1=y + 0.5, fillcolor=colour, line=dict(width=0), xref=f"x{axis}", yref=f"y{axis}")
        note = f"<br>ASPP: in the input image the taps are {rate * output_stride} px apart (rate x output stride {output_stride})" if rate in aspp else ""
        taps = [(rate * dy, rate * dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        fig.add_trace(
            go.Scatter(
                x=[t[1] for t in taps],
                y=[t[0] for t in taps],
                mode="markers",
                marker=dict(size=1, color=colour),
                showlegend=False,
                hovertext=[f"tap ({dy}, {dx}) of 9: the kernel covers {2 * rate + 1}x{2 * rate + 1} pixels{note}" for dy, dx in taps],
                hoverinfo="text",
            ),
            row=row + 1,
            col=col + 1,
        )
        fig.update_xaxes(range=[-half, half], dtick=1, tick0=0.5, showticklabels=False, showgrid=rate <= 12, gridcolor="#e5e5e5", zeroline=False, row=row + 1, col=col + 1)
        fig.update_yaxes(range=[-half, half], dtick=1, tick0=0.5, showticklabels=False, showgrid=rate <= 12, gridcolor="#e5e5e5", zeroline=False, scaleanchor=f"x{axis}", row=row + 1, col=col + 1)
    fig.update_annotations(font_size=13)
    _layout(
        fig,
        "Dilated 3x3 kernels",
        height=60 + 210 * rows,
        subtitle=f"rates {', '.join(map(str, rates))}; coloured squares = the 9 weights; grey grid = input pixels; red = the ASPP rates of DeepLabV3+",
    )
    fig.update_layout(margin=dict(t=fig.layout.margin.t + 40))  # room for the first row's titles
    return fig


def loss_curves_figure(gamma: float) -> go.Figure:
    """Cross-entropy -log p against focal loss -(1 - p)^gamma log p."""
    p = np.linspace(0.005, 1.0, 400)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=p, y=cross_entropy_curve(p), name="CE = -log p", line=dict(width=3, color="#1f77b4")))
    fig.add_trace(go.Scatter(x=p, y=focal_curve(p, gamma), name=f"focal, γ = {gamma:g}", line=dict(width=3, color="#d62728")))
    for g in (0.5, 1, 5):
        if abs(g - gamma) > 1e-9:
            fig.add_trace(go.Scatter(x=p, y=focal_curve(p, g), name=f"focal, γ = {g:g}", line=dict(width=1, dash="dot"), opacity=0.6))
    fig.add_vrect(x0=0.6, x1=1.0, fillcolor="#2ca02c", opacity=0.08, line_width=0)
    fig.update_xaxes(title="probability of the true class, p", range=[0, 1])
    fig.update_yaxes(title="loss", range=[0, 5])
    if gamma == 0:
        subtitle = "at gamma = 0 the focal loss is exactly the cross-entropy; green: well classified (p > 0.6)"
    else:
        subtitle = f"the larger gamma, the less focal loss penalises well-classified pixels (green, p > 0.6): at p = 0.9 it is {(1 - 0.9) ** gamma:.2g} x cross-entropy"
    _layout(fig, f"Cross-entropy vs focal loss (gamma = {gamma:g})", subtitle=subtitle)
    fig.update_layout(legend=dict(orientation="v", yref="paper", yanchor="top", y=0.98, xanchor="right", x=0.99, bgcolor="rgba(255,255,255,0.85)"))  # inside, where the curves are low
    return fig
