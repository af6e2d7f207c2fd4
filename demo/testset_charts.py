"""The Test set tab's figures: a model's row-normalised test confusion matrix and every
model's per-class test IoU with its bootstrap interval, drawn from the numbers in the model
cards (``python -m segmodels test-card``)."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .figures import FONT, MODEBAR_REMOVED, model_colour

# Short names under the matrix's columns where there are so many that they are narrow on a phone.
SHORT_CLASS_NAMES = {"SignSymbol": "Sign", "Pedestrian": "Pedestr.", "Bicyclist": "Bicycl.", "Pavement": "Pavem.", "Building": "Build."}
ABBREVIATE_ABOVE = 6  # classes


def _layout(fig: go.Figure, title: str, subtitle: str, height: int, left: int) -> go.Figure:
    """Title and wrapped subtitle at the top left, short enough for a phone."""
    lines = textwrap.wrap(subtitle, 52, break_on_hyphens=False)
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", yref="container", y=1, yanchor="top", pad=dict(t=10), font=dict(size=18),
                   subtitle=dict(text="<br>".join(lines), font=dict(size=13, color="#555"))),
        font=FONT, height=height + 17 * len(lines), margin=dict(l=left, r=12, t=52 + 17 * len(lines), b=40),
        modebar=dict(orientation="v", remove=MODEBAR_REMOVED),
        legend=dict(orientation="h", yref="container", y=0, yanchor="bottom", xanchor="left", x=0, font=dict(size=13)),
    )
    return fig


def cell_text(percent: float) -> str:
    """A cell's label: whole percent, blank where it rounds to nothing (so the few large
    confusions stand out)."""
    if not np.isfinite(percent) or round(percent) == 0:
        return ""
    return f"{percent:.0f}"


def confusion_figure(percent: np.ndarray, class_names: tuple[str, ...], model: str, num_images: int) -> go.Figure:
    """Heatmap of a row-normalised confusion matrix (rows: true class, columns: predicted
    class, each row summing to 100%), with the percentage written in each cell."""
    short = [SHORT_CLASS_NAMES.get(name, name) for name in class_names] if len(class_names) > ABBREVIATE_ABOVE else list(class_names)
    hover = [[f"{true}: {cell:.1f}% of its pixels predicted as {predicted}" if np.isfinite(cell) else f"{true}: not in these test images" for predicted, cell in zip(class_names, row)]
             for true, row in zip(class_names, percent)]
    fig = go.Figure(go.Heatmap(
        z=percent, x=short, y=list(class_names), zmin=0, zmax=100, colorscale="Blues", showscale=False, xgap=1, ygap=1,
        text=[[cell_text(cell) for cell in row] for row in percent], texttemplate="%{text}", textfont=dict(size=12),
        customdata=hover, hovertemplate="%{customdata}<extra></extra>",
    ))
    fig.update_xaxes(title=dict(text="predicted as", font=dict(size=13)), side="bottom", tickangle=-60, tickfont=dict(size=12), automargin=True)
    fig.update_yaxes(title=None, autorange="reversed", tickfont=dict(size=12), automargin=True)
    return _layout(fig, f"Confusion matrix, {model}", f"row = true class, cell = % of its pixels predicted as the column's class; {num_images} test images", 480, 80)


def per_class_interval_figure(table: pd.DataFrame) -> go.Figure:
    """Horizontal bars of each model's test IoU per class (mIoU first), with 95% bootstrap
    intervals as error bars; ``table`` has columns Model, Class, IoU, Low, High."""
    classes = list(dict.fromkeys(table["Class"]))
    fig = go.Figure()
    for model, rows in table.groupby("Model", sort=False):
        rows = rows.set_index("Class").reindex(classes)
        fig.add_trace(go.Bar(
            y=classes, x=rows["IoU"], orientation="h", name=model, marker_color=model_colour(model),
            error_x=dict(type="data", symmetric=False, array=rows["High"] - rows["IoU"], arrayminus=rows["IoU"] - rows["Low"], thickness=1.5, width=3, color="#222"),
            customdata=np.stack([rows["Low"], rows["High"]], axis=1),
            hovertemplate=f"{model}<br>%{{y}}: %{{x:.3f}} (95% interval %{{customdata[0]:.3f}} to %{{customdata[1]:.3f}})<extra></extra>",
        ))
    models = table["Model"].nunique()
    fig.update_layout(barmode="group", bargap=0.25, bargroupgap=0.05)
    fig.update_xaxes(title="IoU on the test split", range=[0, 1], tickfont=dict(size=12))
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=12), automargin=True)
    height = 120 + len(classes) * (10 + 11 * models)
    return _layout(fig, "Test IoU per class, with 95% intervals", "bars: the score on all test images; whiskers: bootstrap over the images", height, 80)


__all__ = ["SHORT_CLASS_NAMES", "confusion_figure", "per_class_interval_figure"]
