"""Receptive field: the theoretical receptive field of every layer of the chosen models, the
effective receptive field of a clicked pixel (Luo et al. 2016), dilation and what it costs,
SPP, PSPNet's pyramid pooling and ASPP."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd
import torch

from segmodels import ARCH_NAMES, create_model
from segmodels.receptive_field import aspp_rates, output_field_size
from segmodels.teach.pooling import SPP

from .. import explanations, figures, pictures, text
from ..catalogue import ARCH_ORDER
from ..context import Shared
from ..contract import Job, no_image, outdated
from ..core import App
from ..errors import InputError, shown_inline
from ..failures import ModelUnavailable
from ..session import CurrentImage, Request, session_of
from ..view import View, hidden

log = logging.getLogger(__name__)

DILATION_RATES = (1, 2)  # shown before the ASPP rates of the real model
CLICK_SIDE = 320  # smallest longest side of the clickable image
CLICK_PROMPT = "Click on the image: the effective receptive field of that pixel appears below for each chosen model."
FIELDS = tuple(f"field_{arch}" for arch in ARCH_ORDER)
CHARTS = View("chart", "table", "dilation", "summary")
CLICKED = View(*FIELDS, "pooling", "pooling_note", "note")
SHOWN = View("click", *FIELDS, "pooling", "pooling_note", "note")


@dataclass
class Aspp:
    """The ASPP of a DeepLabV3+: its rates, its output stride and which model they come from."""

    rates: list[int]
    output_stride: int
    origin: str


@dataclass
class EffectiveFields:
    """The effective receptive field of one output pixel, for each model that could compute it."""

    image: CurrentImage
    pixel: tuple[int, int]  # (row, column)
    overlays: dict[str, np.ndarray]  # arch -> heat map over the image
    pooling: np.ndarray  # the SPP / ASPP illustration centred on the pixel
    pooling_caption: str
    note: str


def click_scale(size: tuple[int, int]) -> int:
    """Small images are shown enlarged (by this integer factor) so a pixel can be clicked."""
    return max(1, CLICK_SIDE // max(size))


def click_image(image: np.ndarray) -> np.ndarray:
    """The image to click on (nearest-neighbour enlarged)."""
    scale = click_scale(image.shape[:2])
    return image if scale == 1 else np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


class Receptive:
    """The receptive-field tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app
        self.layers = Job(None, self.charted, self.present_charts, shown_inline(lambda message: CHARTS(summary=message)))
        self.click = Job("receptive", self.clicked_fields, self.present_fields, shown_inline(lambda message: CLICKED(note=message)),
                         lambda request: CLICKED(note=request.session.stale_note(request.current)))
        self._untrained: dict[int, torch.nn.Module] = {}

    def table(self, set_name, models, depth) -> pd.DataFrame:
        """One row per conv / pool layer of each chosen model, in execution order."""
        set_name = self.app.check.set_name(set_name)
        archs = self.app.check.models(set_name, models)
        depth = self.app.check.depth(depth)
        frames = []
        for arch in archs:
            layers = self.app.engine.receptive_field(set_name, arch, depth)
            run_depth = self.app.engine.depth_for(set_name, arch, depth)
            frames.append(pd.DataFrame({
                "Model": ARCH_NAMES[arch] + (f" L{run_depth}" if run_depth is not None else ""),
                "Layer": [layer.index for layer in layers],
                "Module": [layer.name for layer in layers],
                "Op": [layer.op for layer in layers],
                "Kernel": [layer.kernel for layer in layers],
                "Stride": [layer.stride for layer in layers],
                "Dilation": [layer.dilation for layer in layers],
                "Receptive field (px)": [layer.size for layer in layers],
                "Jump (px)": [layer.jump for layer in layers],
            }))
        return pd.concat(frames, ignore_index=True)

    def aspp(self, set_name: str) -> Aspp:
        """Read from the first shipped model that has an ASPP, else from an untrained DeepLabV3+."""
        for arch in self.app.choices.archs(set_name):
            try:
                with self.app.engine.guard():
                    model = self.app.engine.model(set_name, arch)
            except ModelUnavailable as error:
                log.warning("%s", error)
                continue
            if aspp_rates(model):
                return Aspp(aspp_rates(model), int(model.output_stride), f"read from the shipped {ARCH_NAMES[arch]} ({set_name}) with segmodels.receptive_field.aspp_rates")
        classes = self.app.choices.info(set_name).num_classes
        if classes not in self._untrained:
            self._untrained[classes] = create_model("deeplabv3p", classes, encoder="plain", pretrained=False, base_channels=4, aspp_channels=8, low_level_channels=4).eval()
        model = self._untrained[classes]
        return Aspp(aspp_rates(model), int(model.output_stride), "read from an untrained DeepLabV3+ built by segmodels (no trained model with ASPP in this set)")

    def effective_fields(self, current: CurrentImage, models, depth, pixel: tuple[int, int]) -> EffectiveFields:
        """ERF heat maps of the output pixel (row, col), clamped into the image."""
        archs = self.app.check.models(current.set_name, models)
        depth = self.app.check.depth(depth)
        row = int(np.clip(pixel[0], 0, current.size[0] - 1))
        col = int(np.clip(pixel[1], 0, current.size[1] - 1))
        overlays = {}
        lines = [f"Effective receptive field of output pixel (row {row}, column {col}) of **{current.label}**, log scale from 1/1000 of the peak gradient (dark) "
                 "to the peak (yellow); cyan square = theoretical receptive field."]
        for arch in archs:
            try:
                erf = self.app.engine.effective_field(current.set_name, arch, current.image, (row, col), depth)
                theoretical = output_field_size(self.app.engine.receptive_field(current.set_name, arch, depth))
            except ModelUnavailable as error:
                lines.append(f"- {error}")
                continue
            overlays[arch] = pictures.erf_overlay(current.image, erf, (row, col), theoretical)
            share = float((erf > 0.01).mean())
            field = "whole image" if math.isinf(theoretical) else f"about {theoretical:.0f} px"
            lines.append(f"- **{ARCH_NAMES[arch]}**: {share:.1%} of the image has a gradient above 1% of the peak; theoretical field {field}.")
        if not overlays:
            raise ModelUnavailable("No model could compute a receptive field. " + " ".join(lines[1:]))
        aspp = self.aspp(current.set_name)
        pooling = pictures.pooling_illustration(current.image, SPP().bins, aspp.rates, aspp.output_stride, (row, col))
        caption = pictures.pooling_caption(current.size, SPP().bins, aspp.rates, aspp.output_stride, (row, col))
        return EffectiveFields(current, (row, col), overlays, pooling, caption, "\n".join(lines))

    # ------------------------------------------------------------------ presenters

    def charts(self, set_name, models, depth):
        """The theoretical receptive-field chart, its per-layer table, the dilation figure, a summary."""
        return self.layers.answer(lambda: no_image(set_name=set_name, models=models, depth=depth))

    def charted(self, request: Request) -> tuple[pd.DataFrame, Aspp]:
        choices = request.choices
        return self.table(choices["set_name"], choices["models"], choices["depth"]), self.aspp(self.app.check.set_name(choices["set_name"]))

    @staticmethod
    def present_charts(request: Request, charted: tuple[pd.DataFrame, Aspp]) -> tuple:
        table, aspp = charted
        traces = {name: frame for name, frame in table.groupby("Model", sort=False)}
        summary = ["| Model | layers | largest theoretical receptive field |", "|---|---|---|"]
        for name, frame in traces.items():
            largest = float(frame["Receptive field (px)"].max())
            summary.append(f"| {name} | {len(frame)} | {'whole image (global pooling)' if math.isinf(largest) else f'about {largest:.0f} px'} |")
        summary.append(f"\nDeepLabV3+ ASPP rates {', '.join(map(str, aspp.rates))} at output stride {aspp.output_stride} ({aspp.origin}); SPP bins {', '.join(f'{b}x{b}' for b in SPP().bins)}.")
        display = table.copy()
        for column in ("Receptive field (px)", "Jump (px)"):
            display[column] = [("whole image" if column.startswith("Receptive") else "-") if math.isinf(v) else f"{v:g}" for v in display[column]]
        dilation = figures.dilation_figure(sorted(set(DILATION_RATES) | set(aspp.rates)), aspp.rates, aspp.output_stride)
        return CHARTS(chart=figures.receptive_field_figure(traces), table=display, dilation=dilation, summary="\n".join(summary))

    def clicked(self, example, image_file, mask_file, set_name, models, depth, session, evt: gr.SelectData):
        """A click on the image (``evt.index`` = (x, y) on the enlarged image): the ERF images,
        the SPP / ASPP illustration and a note naming the image they were computed on."""
        def parse() -> Request:
            if evt is None or evt.index is None:
                raise InputError("Click on the image to choose a pixel.")
            current = self.app.images.current(example, image_file, mask_file, set_name)
            request = Request(current, session_of(session), choices={"models": models, "depth": depth})
            if request.session.shown not in (None, current.identity):
                raise InputError("The image changed: click on the new image.")
            scale = click_scale(current.size)
            x, y = evt.index[:2]
            request.choices["pixel"] = (int(y) // scale, int(x) // scale)
            return request

        return self.click.answer(parse)

    def clicked_fields(self, request: Request) -> EffectiveFields:
        return self.effective_fields(request.current, request.choices["models"], request.choices["depth"], request.choices["pixel"])

    def present_fields(self, request: Request, fields: EffectiveFields) -> tuple:
        slots = {f"field_{a}": gr.update(value=self.app.files.path(fields.overlays[a]), label=ARCH_NAMES[a], visible=True) if a in fields.overlays else gr.update(value=None, visible=False)
                 for a in ARCH_ORDER}
        return CLICKED(**slots, pooling=gr.update(value=self.app.files.path(fields.pooling), visible=True), pooling_note=fields.pooling_caption, note=fields.note)

    def show_image(self, example, image_file, mask_file, set_name, identity, session):
        """A new image was picked: show it to click on, and clear the receptive fields of another image."""
        cleared = dict.fromkeys(FIELDS, hidden()) | dict(pooling=hidden(), pooling_note="", note=CLICK_PROMPT) if outdated("receptive", identity, session) else {}
        try:
            current = self.app.images.current(example, image_file, mask_file, set_name)
        except (InputError, ModelUnavailable):  # the line under the controls says why
            return SHOWN(click=None, **(cleared | {"note": ""}))
        return SHOWN(click=gr.update(value=self.app.files.path(click_image(current.image)), label=f"Click a pixel of {current.label}"), **cleared)


def build(shared: Shared) -> gr.Tab:
    """The receptive-field tab, its components and its events."""
    tab = Receptive(shared.app)
    with gr.Tab("Receptive field", id="receptive") as receptive_tab:
        gr.Markdown(text.RECEPTIVE_FIELD, latex_delimiters=text.LATEX)
        with gr.Accordion("The arithmetic: 2n + 1, dilation, strides; SPP, PSPNet and ASPP; what dilation costs", open=False):
            gr.Markdown(explanations.context(shared.app.config.weights_dir), latex_delimiters=text.LATEX)
        charts_btn = gr.Button("Show the receptive fields of the chosen models", variant="primary", interactive=bool(shared.app.choices.sets()))
        summary = gr.Markdown(label="Receptive field summary")
        chart = gr.Plot(label="Theoretical receptive field by layer", show_label=False)
        with gr.Row(equal_height=False):
            click = gr.Image(label="Click a pixel of this image", interactive=False, format="png", height=340, min_width=300, buttons=[], elem_id="rf-click-image")
            with gr.Column(min_width=300):
                note = gr.Markdown(CLICK_PROMPT, label="Effective receptive field note", elem_id="erf-note")
        with gr.Row(equal_height=True):
            fields = {slot: gr.Image(label=ARCH_NAMES[a], interactive=False, format="png", height=260, min_width=150, visible=False, buttons=["fullscreen"], elem_classes="seg-img")
                      for slot, a in zip(FIELDS, ARCH_ORDER)}
        pooling = gr.Image(label="What SPP (1x1, 2x2, 4x4 bins) and ASPP (taps at rate x output stride, around the clicked pixel) pool",
                           interactive=False, format="png", height=480, visible=False, buttons=["fullscreen"])
        pooling_note = gr.Markdown(label="SPP and ASPP panels", elem_id="pooling-note")
        dilation = gr.Plot(label="Dilated 3x3 kernels", show_label=False)
        with gr.Accordion("Every layer (table)", open=False):
            table = gr.DataFrame(label="Receptive field of every layer", interactive=False, max_height=420)

    charts = dict(fn=shared.on_device(tab.charts), inputs=[shared.set_radio, shared.models_cb, shared.depth_sl],
                  outputs=CHARTS.components(chart=chart, table=table, dilation=dilation, summary=summary), **shared.heavy)
    charts_btn.click(**charts, api_name="receptive_fields")
    receptive_tab.select(**charts, api_name="receptive_tab")
    click.select(shared.on_device(tab.clicked), [*shared.image_inputs, shared.models_cb, shared.depth_sl, shared.session],
                 CLICKED.components(**fields, pooling=pooling, pooling_note=pooling_note, note=note), api_name="effective_fields", show_progress_on=[note], **shared.heavy)
    shared.image_changed.change(tab.show_image, [*shared.image_inputs, shared.image_changed, shared.session],
                                SHOWN.components(click=click, **fields, pooling=pooling, pooling_note=pooling_note, note=note),
                                show_progress="hidden", api_name="receptive_image", **shared.light)
    return receptive_tab
