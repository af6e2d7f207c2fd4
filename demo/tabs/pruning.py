"""Pruning: the set's prunable model (U-Net++) at every depth it declares, on the same
input tensor, each mask streamed as soon as it is done, then the accuracy / speed trade-off."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import gradio as gr
import pandas as pd

from segmodels import ARCH_NAMES

from .. import figures, pictures, text
from ..catalogue import set_label
from ..context import Shared
from ..contract import Job, clear_outdated
from ..core import App
from ..engine import ModelRun
from ..errors import InputError, shown_inline
from ..failures import ModelUnavailable
from ..scores import LATENCY_NOTE, card_miou, card_test, latency_columns, origin_column, rounded
from ..session import CurrentImage, Request, session_of
from ..view import View, hidden

TABLE_LABEL = "Pruning trade-off on this image"


@dataclass
class PruningResult:
    """The prunable model at the depths done so far, on one image."""

    image: CurrentImage
    arch: str
    depths: tuple[int, ...]
    runs: list[ModelRun]
    table: pd.DataFrame
    done: bool = False  # every depth ran, and they were timed together


class Pruning:
    """The pruning tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app
        low, high = app.choices.depth_range()
        self.slots = tuple(f"depth_{i}" for i in range(high - low + 1))  # a mask image per depth the shipped models declare
        self.view = View("status", *self.slots, "table", "plot")
        self.run = Job("pruning", lambda request: self.steps(request.current), self.present, shown_inline(lambda message: self.view(status=message)), self.stopped)

    def prunable_arch(self, set_name: str) -> str:
        """The first shipped architecture of the set that declares pruning depths."""
        for arch in self.app.choices.archs(set_name):
            if self.app.choices.pruning_depths(set_name, arch):
                return arch
        raise InputError(f"The {set_label(set_name)} set ships no model that can be pruned (U-Net++), so there is nothing to prune.")

    def steps(self, current: CurrentImage) -> Iterator[PruningResult]:
        """One result per finished depth, shallowest first (the runs so far), then the
        finished result once more, timed together."""
        set_name = current.set_name
        arch = self.prunable_arch(set_name)
        depths = self.app.choices.pruning_depths(set_name, arch)
        runs = []
        for run in self.app.engine.run_depths(set_name, arch, current.image, current.gt, current.info):
            if not run.ok:
                raise ModelUnavailable(run.error)
            runs.append(run)
            if len(runs) == len(depths):
                self.app.engine.time_together(set_name, runs, current.size)
            yield PruningResult(current, arch, depths, list(runs), self.table(set_name, runs, len(depths)))
        yield replace(PruningResult(current, arch, depths, runs, self.table(set_name, runs, len(depths))), done=True)

    def table(self, set_name: str, runs: list[ModelRun], depths: int) -> pd.DataFrame:
        """One row per depth done: its scores, its latency beside its GFLOPs, and where the
        latency comes from (the depths are timed together once all of them ran)."""
        return pd.DataFrame([{
            "Depth": f"L{run.depth}",
            "mIoU (this image)": rounded(run.metrics["miou"] if run.metrics else None, 4),
            "mIoU (test)": rounded(test.miou if (test := card_test(self.app.engine, set_name, run)) is not None else None, 4),
            "mIoU (card, val set)": card_miou(self.app.engine, set_name, run),
            **latency_columns(run.latency),
            "GFLOPs": rounded(run.flops / 1e9, 3),
            "Params (M)": rounded(run.params / 1e6, 4),
            **origin_column(run.latency, depths, run.timed_together),
        } for run in runs])

    def parse(self, example, image_file, mask_file, set_name, opacity=None, session=None) -> Request:
        opacity = self.app.check.opacity(opacity)
        set_name = self.app.check.set_name(set_name)
        self.prunable_arch(set_name)
        return Request(self.app.images.current(example, image_file, mask_file, set_name), session_of(session), opacity=opacity)

    def result(self, example, image_file, mask_file, set_name) -> PruningResult:
        """Every depth on the image (tests and scripts)."""
        *_, last = self.steps(self.parse(example, image_file, mask_file, set_name).current)
        return last

    def stream(self, example, image_file, mask_file, set_name, opacity, session):
        """Every depth on the image, streamed depth by depth, then the table and the chart."""
        yield from self.run.stream(lambda: self.parse(example, image_file, mask_file, set_name, opacity, session))

    def stopped(self, request: Request) -> tuple:
        return self.view(status=f"Stopped: the image changed while the depths ran on **{request.current.label}**; their results are not shown. Press the button again.")

    def present(self, request: Request, result: PruningResult) -> tuple:
        """A depth done: its mask in its slot (the others waiting); all done: the status, the table and the chart."""
        if result.done:
            return self.present_done(result)
        shown = result.depths[-len(self.slots):]
        slots = {}
        for slot, depth in zip(self.slots, shown):
            run = next((r for r in result.runs if r.depth == depth), None)
            name = f"{ARCH_NAMES[result.arch]} L{depth}"
            picture = self.app.files.path(pictures.overlay(result.image.image, run.labels, result.image.info, request.opacity)) if run else None
            slots[slot] = gr.update(value=picture, label=name if run else f"{name}: waiting…", visible=True)
        slots |= {slot: hidden() for slot in self.slots[len(shown):]}
        return self.view(status=f"**{result.image.label}**: {ARCH_NAMES[result.arch]} at L{result.depths[0]} to L{result.runs[-1].depth} done…", **slots)

    def present_done(self, result: PruningResult) -> tuple:
        truth = "" if result.image.gt is not None else " No ground truth for this image: only the cards' validation mIoU is plotted."
        reused = [f"L{run.depth}" for run in result.runs if run.ok and run.reused]
        if reused and len(reused) == sum(run.ok for run in result.runs):
            passes = "their masks were computed for an earlier request on this same image and shared, so no forward pass ran now."
        else:
            shared_note = f"; {', '.join(reused)} had already run on this same image for an earlier request and {'was' if len(reused) == 1 else 'were'} shared."
            passes = "one forward pass each" + (shared_note if reused else ".")
        status = (f"**{result.image.label}**: {ARCH_NAMES[result.arch]} pruned to depths L{result.depths[0]} to L{result.depths[-1]}, each on the same input tensor: "
                  f"{passes}{truth}\n\n<small>{LATENCY_NOTE}</small>")
        return self.view(status=status, table=gr.update(value=figures.table_html(result.table, TABLE_LABEL), visible=True), plot=gr.update(value=figures.pruning_figure(result.table), visible=True))

    def clear(self, identity, session):
        """A new image was picked: the depths' results of another image go."""
        return clear_outdated("pruning", identity, session, self.view, status="Press the button (or open this tab again) to run every depth on the new image.",
                              **{slot: hidden() for slot in self.slots}, table=hidden(), plot=hidden())


def build(shared: Shared) -> gr.Tab:
    """The pruning tab, its components and its events."""
    tab = Pruning(shared.app)
    with gr.Tab("U-Net++ pruning", id="pruning") as pruning_tab:
        gr.Markdown(text.PRUNING, latex_delimiters=text.LATEX)
        low, high = shared.app.choices.depth_range()
        run_btn = gr.Button(f"Run U-Net++ at every depth (L{low} to L{high})", variant="primary", interactive=bool(shared.app.choices.sets()))
        status = gr.Markdown(label="Pruning status", elem_id="pruning-status")
        with gr.Row(equal_height=True):
            depths = {
                slot: gr.Image(label=f"L{low + i}", interactive=False, format="png", height=260, min_width=150, visible=False, buttons=["fullscreen"], elem_classes="seg-img")
                for i, slot in enumerate(tab.slots)
            }
        table = gr.HTML(label=TABLE_LABEL, visible=False, elem_id="pruning-table", padding=False)
        plot = gr.Plot(label="mIoU vs compute per depth", show_label=False, visible=False, elem_id="pruning-plot")

    outputs = tab.view.components(status=status, **depths, table=table, plot=plot)
    run = dict(fn=shared.on_device(tab.stream), inputs=[*shared.image_inputs, shared.opacity_sl, shared.session], outputs=outputs, show_progress="minimal", show_progress_on=[status], **shared.heavy)
    run_btn.click(**run, api_name="pruning")
    pruning_tab.select(**run, api_name="pruning_tab")
    shared.image_changed.change(tab.clear, [shared.image_changed, shared.session], outputs, show_progress="hidden", api_name="pruning_clear", **shared.light)
    return pruning_tab
