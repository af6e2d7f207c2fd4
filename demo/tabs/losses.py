"""Losses and IoU: class weights w_c = (N - N_c) / N and median-frequency weights counted on the current mask,
cross-entropy against focal loss, and the TP / FP / FN map behind one class's IoU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch

from segmodels import ARCH_NAMES
from segmodels.data import DatasetInfo
from segmodels.losses import class_weights_inverse_share, class_weights_median_frequency, pixel_counts
from segmodels.metrics import ERROR_FN, ERROR_FP, ERROR_TP, iou_error_map

from .. import explanations, figures, pictures, text
from ..catalogue import ARCH_ORDER
from ..context import Shared
from ..contract import Job, clear_outdated
from ..core import App
from ..errors import InputError, shown_inline
from ..losslab_charts import class_weights_figure
from ..session import CurrentImage, Request, SessionCache, session_of
from ..view import View, hidden

WEIGHTS = View("table", "chart", "note")
IOU = View("map", "note", "session")
CHOICES = View("model", "class_name")
CLEARED = View("table", "chart", "note", "map", "iou_note")


@dataclass
class ClassWeights:
    """Pixel counts N_c and weights w_c of every class, counted on one mask."""

    image: CurrentImage
    table: pd.DataFrame
    origin: str  # which mask was counted

    @property
    def total(self) -> int:
        return int(self.table["Pixels N_c"].sum())


@dataclass
class IouMap:
    """One model's TP / FP / FN pixels of one class on an image with ground truth."""

    image: CurrentImage
    arch: str
    class_name: str
    codes: np.ndarray  # H x W error codes of segmodels.metrics.iou_error_map
    tp: int
    fp: int
    fn: int

    @property
    def iou(self) -> float:
        union = self.tp + self.fp + self.fn
        return self.tp / union if union else float("nan")


def class_weight_table(mask: np.ndarray, info: DatasetInfo) -> pd.DataFrame:
    ignore = info.ignore_index if info.ignore_index is not None else -100
    counts = pixel_counts(torch.from_numpy(mask.astype(np.int64)), info.num_classes, ignore)
    total = int(counts.sum())
    if total == 0:
        raise InputError("The mask has no labelled pixels, so there is nothing to count.")
    weights = class_weights_inverse_share(counts)
    median_frequency = class_weights_median_frequency(counts)
    return pd.DataFrame({
        "Class": list(info.class_names),
        "Pixels N_c": [int(c) for c in counts],
        "Share of pixels": [round(int(c) / total, 4) for c in counts],
        "Weight w_c": [round(float(w), 4) for w in weights],
        "Median-frequency weight": [round(float(w), 4) for w in median_frequency],
    })


def default_iou_class(info: DatasetInfo) -> str:
    return next((name for name in ("Car", "circle") if name in info.class_names), info.class_names[-1])


class Losses:
    """The losses tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app
        self.counting = Job("losses", lambda request: self.class_weights(request.current, request.session), self.present_weights,
                            shown_inline(lambda message: WEIGHTS(table=hidden(), chart=hidden(), note=message)),
                            lambda request: WEIGHTS(note=request.session.stale_note(request.current)))
        self.mapping = Job("losses", self.mapped, self.present_iou, shown_inline(lambda message: IOU(map=hidden(), note=message)),
                           lambda request: IOU(note=request.session.stale_note(request.current)))

    def mapped(self, request: Request) -> IouMap:
        return self.iou_map(request.current, request.choices["arch"], request.choices["class_name"], request.choices["depth"], request.session)

    def class_weights(self, current: CurrentImage, session: SessionCache) -> ClassWeights:
        """Counted on the ground truth, else on the first prediction already made for the image."""
        if current.gt is not None:
            return ClassWeights(current, class_weight_table(current.gt, current.info), "the ground-truth mask")
        predictions = session.predictions_for(current)
        if not predictions:
            raise InputError("This image has no ground-truth mask. Upload one with the image, or press Run on the Compare tab so a predicted mask can be counted instead.")
        key = min(predictions, key=lambda k: ARCH_ORDER.index(k.arch))
        return ClassWeights(current, class_weight_table(predictions[key], current.info), f"the mask predicted by {ARCH_NAMES[key.arch]} (no ground truth for this image)")

    def iou_map(self, current: CurrentImage, arch, class_name, depth, session: SessionCache) -> IouMap:
        arch = self.app.check.models(current.set_name, [arch] if arch else [])[0]
        if current.gt is None:
            raise InputError("The IoU map needs a ground-truth mask: pick an example or upload a mask with your image.")
        class_index = self.app.check.class_name(current.info, class_name)
        labels = self.app.predictions.predict(current, arch, self.app.check.depth(depth), session)
        codes = iou_error_map(labels, current.gt, class_index, current.info.ignore_index)
        tp, fp, fn = (int((codes == c).sum()) for c in (ERROR_TP, ERROR_FP, ERROR_FN))
        return IouMap(current, arch, class_name, codes, tp, fp, fn)

    # ------------------------------------------------------------------ presenters

    def weights(self, example, image_file, mask_file, set_name, session):
        return self.counting.answer(lambda: Request(self.app.images.current(example, image_file, mask_file, set_name), session_of(session)))

    @staticmethod
    def present_weights(request: Request, result: ClassWeights) -> tuple:
        note = f"Counted on {result.origin} of **{result.image.label}**: N = {result.total} labelled pixels."
        return WEIGHTS(table=gr.update(value=result.table, visible=True), chart=gr.update(value=class_weights_figure(result.table), visible=True), note=note)

    @staticmethod
    def curves(gamma):
        try:
            gamma = float(gamma)
        except (TypeError, ValueError):
            gamma = 2.0
        return figures.loss_curves_figure(max(0.0, gamma) if math.isfinite(gamma) else 2.0)

    def iou(self, example, image_file, mask_file, set_name, arch, class_name, depth, session):
        def parse() -> Request:
            current = self.app.images.current(example, image_file, mask_file, set_name)
            return Request(current, session_of(session), choices={"arch": arch, "class_name": class_name, "depth": depth})

        return self.mapping.answer(parse)

    def present_iou(self, request: Request, result: IouMap) -> tuple:
        class_name = result.class_name
        if math.isnan(result.iou):
            formula = f"**{class_name}** is neither in the ground truth nor in the prediction: its IoU is undefined and it does not count towards mIoU."
        else:
            formula = f"IoU({class_name}) = TP / (TP + FP + FN) = {result.tp} / ({result.tp} + {result.fp} + {result.fn}) = **{result.iou:.3f}**"
        note = f"{ARCH_NAMES[result.arch]} on **{result.image.label}**. Green **TP = {result.tp}**, red **FP = {result.fp}**, blue **FN = {result.fn}** pixels.\n\n{formula}"
        return IOU(map=gr.update(value=self.app.files.path(pictures.error_map_image(result.image.image, result.codes)), visible=True), note=note, session=request.session)

    def choices(self, set_name):
        """A new model set: its models and classes."""
        if set_name not in self.app.choices.sets():
            return CHOICES()
        archs = self.app.choices.model_choices(set_name)
        info = self.app.choices.info(set_name)
        return CHOICES(model=gr.update(choices=archs, value=archs[0][1] if archs else None), class_name=gr.update(choices=list(info.class_names), value=default_iou_class(info)))

    @staticmethod
    def clear(identity, session):
        """A new image was picked: the results of another image go."""
        return clear_outdated("losses", identity, session, CLEARED, table=hidden(), chart=hidden(), note="", map=hidden(), iou_note="")


def build(shared: Shared) -> gr.Tab:
    """The losses tab, its components and its events."""
    tab = Losses(shared.app)
    set_name = shared.set_radio.value
    archs = shared.app.choices.model_choices(set_name)
    info = shared.app.choices.info(set_name)
    with gr.Tab("Losses and IoU", id="losses") as losses_tab:
        gr.Markdown(text.LOSSES, latex_delimiters=text.LATEX)
        gr.Markdown(explanations.weighted_losses(), latex_delimiters=text.LATEX)
        weights_btn = gr.Button("Count the pixels of each class", variant="primary", interactive=bool(shared.app.choices.sets()))
        weights_note = gr.Markdown(label="Class weights note", elem_id="weights-note")
        with gr.Row():
            weights_table = gr.DataFrame(label="Class pixel counts and weights", interactive=False, min_width=300, visible=False)
            weights_chart = gr.Plot(label="Share of pixels and class weight", show_label=False, min_width=300, visible=False)
        gamma = gr.Slider(0.0, 5.0, value=2.0, step=0.1, label="Focal loss gamma")
        curves = gr.Plot(figures.loss_curves_figure(2.0), label="Loss as a function of p", show_label=False)
        with gr.Row():
            model = gr.Dropdown(archs, value=archs[0][1] if archs else None, label="Model", min_width=180)
            class_name = gr.Dropdown(list(info.class_names), value=default_iou_class(info), label="Class", min_width=180)
            iou_btn = gr.Button("Show TP / FP / FN", variant="primary", interactive=bool(shared.app.choices.sets()), min_width=160)
        with gr.Row(equal_height=False):
            error_map = gr.Image(label="IoU map: TP green, FP red, FN blue", interactive=False, format="png", height=320, min_width=300, visible=False, buttons=["fullscreen"], elem_classes="seg-img")
            with gr.Column(min_width=300):
                iou_note = gr.Markdown(label="IoU note", elem_id="iou-note")

    weights = dict(fn=tab.weights, inputs=[*shared.image_inputs, shared.session], outputs=WEIGHTS.components(table=weights_table, chart=weights_chart, note=weights_note), **shared.light)
    iou = dict(fn=shared.on_device(tab.iou), inputs=[*shared.image_inputs, model, class_name, shared.depth_sl, shared.session],
               outputs=IOU.components(map=error_map, note=iou_note, session=shared.session), show_progress_on=[iou_note], **shared.heavy)
    weights_btn.click(**weights, api_name="class_weights")
    iou_btn.click(**iou, api_name="iou_map")
    losses_tab.select(**weights, api_name="losses_tab").then(**iou, api_name="losses_tab_iou")
    gamma.change(tab.curves, gamma, curves, show_progress="hidden", api_name="loss_curves", **shared.light)
    shared.set_radio.change(tab.choices, shared.set_radio, CHOICES.components(model=model, class_name=class_name), show_progress="hidden", api_name="losses_choices", **shared.light)
    shared.image_changed.change(tab.clear, [shared.image_changed, shared.session],
                                CLEARED.components(table=weights_table, chart=weights_chart, note=weights_note, map=error_map, iou_note=iou_note),
                                show_progress="hidden", api_name="losses_clear", **shared.light)
    return losses_tab
