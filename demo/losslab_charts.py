"""The Loss lab's figures, tables and texts, all rendered from the runs' numbers (the
precomputed curves, :func:`segmodels.teach.losslab.lab_class_weights`, CamVid's weight schemes),
and the Losses tab's chart of the two weighting schemes on one mask."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmodels import zoo
from segmodels.data.info import CAMVID
from segmodels.teach.losslab import LOSS_LABELS
from segmodels.teach.numbers import camvid_class_weight_schemes

from .losslab_runs import CLASS_COLOURS, FONT, LOSS_COLOURS, LOSS_TICKS, SHORT_LABELS, LabCurves, Precomputed


def _layout(fig: go.Figure, title: str, subtitle: str, height: int) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, font=dict(size=17), subtitle=dict(text=subtitle, font=dict(size=12, color="#555"))),
        font=FONT,
        height=height,
        margin=dict(l=55, r=15, t=90, b=40),
        legend=dict(orientation="h", y=-0.18),
    )
    return fig


def _run_name(curves: LabCurves, is_current: bool) -> str:
    role = "previous run" if not is_current else "this run" if curves.source == "live" else "precomputed"
    return f"{role}: {SHORT_LABELS[curves.loss]}" + (f" γ={curves.gamma:g}" if curves.gamma is not None else "")


def loss_figure(current: LabCurves | None, previous: LabCurves | None, max_steps: int) -> go.Figure:
    """Training loss per step (log scale) of the current run (solid) and the previous one (dashed)."""
    fig = go.Figure()
    for curves, is_current, dash in ((current, True, "solid"), (previous, False, "dash")):
        if curves is not None:
            fig.add_trace(go.Scatter(x=curves.step[1:], y=curves.train_loss[1:], name=_run_name(curves, is_current), mode="lines+markers",
                                     line=dict(width=3, dash=dash, color=LOSS_COLOURS[curves.loss]), marker=dict(size=5)))
    fig.update_xaxes(title="training step", range=[0, max_steps])
    fig.update_yaxes(title="training loss", type="log", tickvals=LOSS_TICKS, ticktext=[f"{v:g}" for v in LOSS_TICKS])
    return _layout(fig, "Training loss", "losses differ in scale:<br>compare how each falls, not its height", 380)


def iou_figure(current: LabCurves | None, previous: LabCurves | None, class_names: tuple[str, ...], rare_class: int, max_steps: int) -> go.Figure:
    """Per-class IoU on the held-out batch per step: one colour per class, the current run solid,
    the previous run dashed; the rare class drawn thickest."""
    fig = go.Figure()
    roles = []
    for curves, is_current in ((current, True), (previous, False)):
        if curves is None:
            continue
        dash, width = ("solid", 3) if is_current else ("dash", 1.5)
        roles.append(f"{'solid' if is_current else 'dashed'}: {_run_name(curves, is_current)}")
        for index, name in enumerate(class_names):
            fig.add_trace(go.Scatter(
                x=curves.step, y=curves.class_series("iou", index), name=name + (" (rare)" if index == rare_class else ""), legendgroup=name,
                showlegend=is_current or current is None, mode="lines", line=dict(width=width + (2 if index == rare_class else 0), dash=dash, color=CLASS_COLOURS[index]),
            ))
    fig.update_xaxes(title="training step", range=[0, max_steps])
    fig.update_yaxes(title="IoU (held-out batch)", range=[0, 1.02])
    return _layout(fig, "Per-class IoU", "<br>".join(roles) or "press Train to watch a run", 420)


def precomputed_figure(precomputed: Precomputed) -> go.Figure:
    """The rare class's IoU and recall per step for each of the five precomputed runs."""
    rare = precomputed.rare_class
    name = precomputed.class_names[rare]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(f"{name} IoU", f"{name} recall (share of its pixels found)"))
    for loss, curves in precomputed.runs.items():
        for row, values in ((1, "iou"), (2, "recall")):
            label = SHORT_LABELS[loss] + (f" γ={curves.gamma:g}" if curves.gamma is not None else "")
            fig.add_trace(go.Scatter(x=curves.step, y=curves.class_series(values, rare), name=label, legendgroup=loss, showlegend=row == 1, mode="lines",
                                     line=dict(width=3, color=LOSS_COLOURS[loss])), row=row, col=1)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_xaxes(title="training step", row=2, col=1)
    seeds = "one seed" if len(precomputed.seeds) == 1 else f"{len(precomputed.seeds)} seeds"
    fig = _layout(fig, f"The {name}s under all five losses", f"precomputed: the live run's model and settings,<br>{seeds}, {precomputed.max_steps} steps each", 600)
    fig.update_layout(margin=dict(t=110))
    return fig


def class_weights_figure(table: pd.DataFrame) -> go.Figure:
    """The pixel share and both weights of every class of a mask that has it, on one log
    axis, with each scheme's spread (largest over smallest weight) in the subtitle. ``table``
    has the columns of :func:`demo.tabs.losses.class_weight_table`."""
    present = table[table["Pixels N_c"] > 0]
    schemes = (("Weight w_c", "(N − N_c)/N", "#d62728", "circle"), ("Median-frequency weight", "median frequency", "#2ca02c", "diamond"))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=present["Class"], y=present["Share of pixels"], name="share of pixels N_c / N", marker_color="#9ecae1"))
    spreads = []
    for column, name, colour, symbol in schemes:
        weights = present[column]
        low, high = weights.idxmin(), weights.idxmax()
        ratio = f"{weights[high] / weights[low]:.1f}x" if weights[low] > 0 else "no ratio: the smallest weight is 0"
        spreads.append(f"{name} {weights[low]:.3g} ({present['Class'][low]}) to {weights[high]:.3g} ({present['Class'][high]}), {ratio}")
        fig.add_trace(go.Scatter(x=present["Class"], y=weights, name=f"w_c, {name}", mode="lines+markers", marker=dict(size=10, color=colour, symbol=symbol), line=dict(width=2, color=colour)))
    fig.update_yaxes(type="log", dtick=1, title="share or weight (log scale)")
    absent = len(table) - len(present)
    subtitle = "<br>".join(spreads) + (f"<br>{absent} class{'es' if absent > 1 else ''} absent from this mask (no weight)" if absent else "")
    fig = _layout(fig, "Pixel shares and both weighting schemes", subtitle, 440 + 20 * bool(absent))
    fig.update_layout(margin=dict(t=110 + 18 * bool(absent)))
    return fig


# ---------------------------------------------------------------------------- text


LAST_EVALUATIONS = 5  # every verdict and the final table average this many evaluations, not one snapshot


def run_description(precomputed: Precomputed, last: int = LAST_EVALUATIONS) -> str:
    """"one seed (seed 0), 600 steps; the mean of the last 5 evaluations (steps 500-600)", from the data."""
    seeds = precomputed.seeds
    seed_text = f"one seed (seed {seeds[0]})" if len(seeds) == 1 else f"{len(seeds)} seeds"
    steps = next(iter(precomputed.runs.values())).step
    window = steps[-min(last, len(steps) - 1):]
    return f"{seed_text}, {precomputed.max_steps} steps; the mean of the last {len(window)} evaluations (steps {window[0]}-{window[-1]})"


def final_table(precomputed: Precomputed, last: int = LAST_EVALUATIONS) -> pd.DataFrame:
    """Per precomputed run, averaged over its last ``last`` evaluations: the per-class IoU,
    the rare class's recall, the mIoU and the mIoU's standard deviation over those evaluations."""
    names, rare = precomputed.class_names, precomputed.rare_class
    rows = []
    for loss, curves in precomputed.runs.items():
        row = {"loss": SHORT_LABELS[loss] + (f" (γ = {curves.gamma:g})" if curves.gamma is not None else "")}
        row.update({f"{name} IoU": round(value, 2) for name, value in zip(names, curves.mean_of_last("iou", last))})
        row[f"{names[rare]} recall"] = round(curves.mean_of_last("recall", last)[rare], 2)
        miou, swing = curves.miou_of_last(last)
        row["mIoU"] = round(miou, 2)
        row["mIoU sd"] = round(swing, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def false_positives_per_hit(iou: float, recall: float) -> float:
    """Pixels wrongly given a class per pixel of it found: with IoU = TP / (TP + FP + FN) and
    recall = TP / (TP + FN), FP / TP = 1 / IoU - 1 / recall."""
    return 1.0 / iou - 1.0 / recall


def miou_ranking(precomputed: Precomputed, last: int = LAST_EVALUATIONS) -> list[tuple[str, float, float]]:
    """(loss, mean mIoU, its standard deviation) over the last ``last`` evaluations, best first."""
    ranked = [(loss, *curves.miou_of_last(last)) for loss, curves in precomputed.runs.items()]
    return sorted(ranked, key=lambda item: -item[1])


def _focal_caveats(precomputed: Precomputed) -> str:
    """Why the lab's focal runs are no fair trial of focal loss (Lin et al. 2017, Sec. 3-4), as
    a nested list."""
    gamma = precomputed.runs["focal"].gamma
    return "\n".join((
        "  This is not a fair trial of focal loss:",
        f"  - every loss here gets the same Adam learning rate and {precomputed.max_steps} steps, while (1 − p_t)^γ shrinks each pixel's loss, and its gradient, "
        f"as the pixel gets easier (at p_t = 0.5 by {1 / (1 - 0.5) ** gamma:g}x for γ = {gamma:g}): a schedule tuned for it may differ (Lin et al. train RetinaNet with SGD for 90k iterations);",
        "  - the paper pairs γ = 2 with α = 0.25 for the rare foreground class and 0.75 for the background: it weights the rare class *down*, "
        "because γ already down-weights the easy background examples (here every class weighs 1 in focal, (N − N_c)/N in weighted focal);",
        "  - the paper initialises the classifier's bias to b = −log((1 − π)/π) with π = 0.01, so every example starts as background and the many background "
        "examples do not produce a large, destabilising loss in the first iterations; here the head starts at PyTorch's default;",
        "  - it sums the loss over all anchors and divides by the number of foreground ones; here it is averaged over all pixels.",
    ))


def rare_class_verdict(precomputed: Precomputed, min_gain: float = 0.01, last: int = LAST_EVALUATIONS) -> str:
    """What each loss did to the rare class in the precomputed runs, judged on the mean of
    their last ``last`` evaluations (one evaluation of these curves swings too much): which
    losses raised the rare class's IoU above plain cross-entropy's by at least ``min_gain``,
    at what cost, and whether the runs' mIoU differ by more than their swing."""
    names, rare = precomputed.class_names, precomputed.rare_class
    rare_name = names[rare]
    runs = precomputed.runs
    iou = {loss: curves.mean_of_last("iou", last) for loss, curves in runs.items()}
    recall = {loss: curves.mean_of_last("recall", last) for loss, curves in runs.items()}
    share = precomputed.loss_share
    dominant = max(range(len(names)), key=precomputed.pixel_share.__getitem__)
    reached = "; ".join(f"{SHORT_LABELS[loss]} {iou[loss][rare]:.2f}" for loss in runs)
    lines = [
        f"### What each loss did to the {rare_name}s",
        f"Precomputed: {run_description(precomputed, last)}, so that no verdict rests on one evaluation of these noisy curves. "
        f"{rare_name.capitalize()} IoU: {reached}.",
        "",
        f"- **Cross-entropy** weighs every pixel alike: the {rare_name}s hold {precomputed.pixel_share[rare]:.2%} of the pixels and so {share['ce'][rare]:.2%} of the loss. "
        f"Ignoring them costs almost nothing, and the model learns to: {rare_name} IoU {iou['ce'][rare]:.2f}, recall {recall['ce'][rare]:.2f}.",
        f"- **(N − N_c)/N weights** are close to 1 for every class but the dominant one ({names[dominant]}: {precomputed.class_weights['wce'][dominant]:.3f}, "
        f"the {rare_name}: {precomputed.class_weights['wce'][rare]:.3f}; a {precomputed.weight_spread['wce']:.1f}x spread): "
        f"they shrink the {names[dominant]}'s part, so the {rare_name}s' share of the loss only grows to {share['wce'][rare]:.2%}.",
        f"- **Median-frequency weights** give the {rare_name} {precomputed.class_weights['mfb'][rare]:.2f} (a {precomputed.weight_spread['mfb']:.1f}x spread): "
        f"its share of the loss grows to {share['mfb'][rare]:.2%}.",
        f"- **Focal loss** does not know which class is rare: it scales every pixel by (1 − p_t)^γ, moving the loss to whichever pixels are still wrong. "
        f"While all pixels are equally wrong the {rare_name}s hold {share['focal'][rare]:.2%} of it, as with cross-entropy.\n" + _focal_caveats(precomputed),
        f"- **Weighted focal** adds the (N − N_c)/N weights ({share['wfocal'][rare]:.2%} of the loss at the start) to that.",
        "",
    ]
    baseline = iou["ce"][rare]
    raisers = [loss for loss in runs if loss != "ce" and iou[loss][rare] >= baseline + min_gain]
    if not raisers:
        lines.append(f"**On this set no loss raises the {rare_name}'s IoU above cross-entropy's {baseline:.2f}.**")
    else:
        which = " and ".join(LOSS_LABELS[loss] for loss in raisers)
        lines.append(f"**On this set {'only ' if len(raisers) == 1 else ''}{which} raise{'s' if len(raisers) == 1 else ''} the {rare_name}'s IoU above cross-entropy's {baseline:.2f}.**")
        for loss in raisers:
            window = runs[loss].window(last)
            steady = min(runs[loss].class_series("iou", rare)[window]) > max(runs["ce"].class_series("iou", rare)[window])
            others = [c for c in range(len(names)) if c != rare]
            worse = ", ".join(f"{names[c]} {iou['ce'][c]:.2f} → {iou[loss][c]:.2f}" for c in others if iou[loss][c] < iou["ce"][c])
            lines.append(
                f"{_sentence_start(LOSS_LABELS[loss])} finds {recall[loss][rare]:.0%} of the {rare_name} pixels (recall {recall[loss][rare]:.2f}), yet its IoU is only {iou[loss][rare]:.2f}"
                + (", above cross-entropy's at each of those evaluations" if steady else ", above cross-entropy's on average but not at every evaluation")
                + f": for every {rare_name} pixel it finds, it marks {false_positives_per_hit(iou[loss][rare], recall[loss][rare]):.1f} pixels of other classes as {rare_name}. "
                "Recall (a class's accuracy) counts only the pixels it misses; IoU counts the false alarms too. "
                + (f"The other classes pay for it: {worse}." if worse else "")
            )
    ranking = miou_ranking(precomputed, last)
    order = ", ".join(f"{SHORT_LABELS[loss]} {mean:.2f} ± {sd:.2f}" for loss, mean, sd in ranking)
    separated = [(a, b) for a, b in zip(ranking, ranking[1:]) if a[1] - b[1] > max(a[2], b[2])]
    if separated:
        apart = "; ".join(f"{SHORT_LABELS[a[0]]} above {SHORT_LABELS[b[0]]}" for a, b in separated)
        judged = f"Only these neighbours differ by more than either one's swing: {apart}; the others do not, so one seed does not rank them."
    else:
        judged = "No two neighbours differ by more than either one's swing, so one seed does not rank the losses by mIoU."
    lines += ["", f"**mIoU** (mean ± standard deviation over the same evaluations): {order}. {judged}"]
    return "\n".join(lines)


def lab_weights_table(weights: list[dict[str, Any]], rare_class: int) -> pd.DataFrame:
    """Per class of the lab's training masks: its share of the pixels, its weight and share of
    the loss under (N − N_c)/N and under median-frequency weights (from :func:`lab_class_weights`)."""
    by_loss = {info["loss"]: info for info in weights}
    ce, wce, mfb = by_loss["ce"], by_loss["wce"], by_loss["mfb"]
    return pd.DataFrame([
        {
            "class": name + (" (rare)" if index == rare_class else ""),
            "share of pixels": f"{ce['pixel_share'][index]:.2%}",
            "w (N − N_c)/N": round(wce["weights"][index], 3),
            "loss share, (N − N_c)/N": f"{wce['loss_share'][index]:.2%}",
            "w median-freq.": round(mfb["weights"][index], 3),
            "loss share, median-freq.": f"{mfb['loss_share'][index]:.2%}",
        }
        for index, name in enumerate(ce["class_names"])
    ])


def lab_weights_note(weights: list[dict[str, Any]]) -> str:
    by_loss = {info["loss"]: info for info in weights}
    return (
        f"Spread (largest / smallest weight): (N − N_c)/N {by_loss['wce']['spread']:.1f}x, median-frequency {by_loss['mfb']['spread']:.1f}x. "
        "The focal losses use no weights (focal) or the (N − N_c)/N ones (weighted focal)."
    )


def camvid_markdown(schemes: dict[str, Any], card_losses: list[str]) -> str:
    """Both schemes on CamVid's training masks (:func:`segmodels.teach.numbers.class_weight_schemes`)."""
    names, share = schemes["class_names"], schemes["pixel_share"]
    inverse, median = schemes["inverse_share"], schemes["median_frequency"]
    low, high = min(range(len(names)), key=inverse.__getitem__), max(range(len(names)), key=inverse.__getitem__)
    rows = ["| class | share of pixels | (N − N_c)/N | median-frequency |", "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {share[c]:.2%} | {inverse[c]:.3f} | {median[c]:.2f} |" for c, name in enumerate(names)]
    trained = f" The shipped CamVid models were trained with {' and '.join(LOSS_LABELS.get(loss, loss) for loss in card_losses)}." if card_losses else ""
    return (
        "### The same weights on CamVid's training masks\n\n"
        f"With {len(names)} classes, (N − N_c)/N hardly rebalances: it runs from {inverse[low]:.3f} ({names[low]}, {share[low]:.0%} of the pixels) to {inverse[high]:.3f} ({names[high]}), "
        f"a {schemes['inverse_share_spread']:.2f}x spread. Median-frequency weights spread {schemes['median_frequency_spread']:.0f}x.{trained}\n\n"
        "Weighting the rare classes up raises their accuracy (recall): the model predicts them more often. Their IoU rises less than their recall, "
        "because those extra predictions include false positives that IoU counts and accuracy does not, and the classes whose pixels they take "
        "lose IoU (in the project's short CamVid loss experiment, README \"How the loss was chosen\", the rare classes and the mIoU gained while some large classes lost, Building most).\n\n"
        + "\n".join(rows)
    )


@functools.lru_cache(maxsize=2)
def _camvid_schemes(root: str) -> dict[str, Any]:
    return camvid_class_weight_schemes(root)


def camvid_section(camvid_dir: Path | None, weights_dir: Path) -> str:
    """CamVid's weights when a CamVid folder is configured, else a line saying how to get them."""
    if camvid_dir is None:
        return f"*CamVid's weights appear here when the server is started with a CamVid folder (it has {CAMVID.num_classes} classes).*"
    try:
        schemes = _camvid_schemes(str(camvid_dir))
    except (OSError, ValueError) as error:
        return f"*CamVid's weights are unavailable: {error}*"
    card_losses = set()
    for name in zoo.list_models(weights_dir):
        if name.startswith("camvid/"):
            try:
                card_losses.add(zoo.load_card(name, weights_dir)["training"]["loss"])
            except (zoo.WeightsError, KeyError, TypeError, ValueError):
                continue
    return camvid_markdown(schemes, sorted(card_losses))
