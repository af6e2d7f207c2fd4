"""The "Loss lab" tab (issue 13): train a tiny U-Net on Imbalanced Shapes for about 30 s with
one of five losses and watch, live, what the loss does to the rare class (the triangles, about
0.5 % of the pixels), next to the previous run of the same browser tab and the precomputed
runs of all five losses.

The losses (:mod:`segmodels.teach.losslab`), with ``p_t`` the predicted probability of pixel i's
true class ``t_i``, ``N_c`` the training pixels of class c and ``N = sum_c N_c``:
cross-entropy ``-log p_t``; weighted CE ``-w_t log p_t`` normalised by ``sum_i w_{t_i}`` with
``w_c = (N - N_c) / N``; the same with median-frequency weights ``w_c = median(freq) / freq_c``,
``freq_c = N_c / P_c`` (Eigen & Fergus, ICCV 2015); focal ``-(1 - p_t)^gamma log p_t`` (Lin et
al., ICCV 2017, Eq. 4) and weighted focal (Eq. 5 with ``w_c`` as ``alpha_t``). A class's share
of the loss while every pixel is equally wrong is ``N_c w_c / sum_j N_j w_j``.

Sharing a 2-core classroom server
---------------------------------
* **One live run on the whole server** (:class:`LiveRunGate`): a second student is answered at
  once with the precomputed run of the loss they chose and a message, never queued. A run that
  was never closed (a vanished client) loses the gate after ``max_hold_s``.
* **A per-session budget**: at most :data:`RUNS_PER_WINDOW` live runs per browser session in
  any :data:`WINDOW_S` seconds, said on screen.
* **Fair to the model jobs**: the lab trains on one thread and takes a
  :meth:`demo.scheduler.FairScheduler.turn` for every chunk of ``eval_every`` (25) steps, about
  1 s, instead of one turn for the whole run (``shared.on_device`` would hold the device for
  30 s). Between chunks the turn goes round robin to other addresses, so a student's model job
  waits for at most one chunk. Its tickets carry no browser session, so the student's own model
  clicks neither supersede the lab nor are superseded by it. Time spent waiting for turns
  counts against the run's 30 s budget: on a busy server the run reaches fewer steps and says
  so, and the wait for a turn stops at the budget's end. While a run is live it marks the
  engine's benchmarker busy, so no latency is measured with a core taken. One thread, not
  the whole turn's cores, because the precomputed runs used one: on a quiet machine a live run
  repeats its loss's precomputed run step for step (600 steps took 26 s of wall time on the
  2-core machine), and the other core stays free for the light events.

This module holds the tab's state (:class:`LossLab`), its presenter and its layout; the runs'
data and the live-run gate are in :mod:`demo.losslab_runs`, the figures and texts in
:mod:`demo.losslab_charts`. The rare-class verdict and the final table are rendered from ``assets/losslab/curves.json``
(written by ``scripts/precompute_losslab.py``), the weight table from
:func:`segmodels.teach.losslab.lab_class_weights`, and CamVid's weight spreads from
:func:`segmodels.teach.numbers.camvid_class_weight_schemes` when a CamVid folder is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import gradio as gr
import pandas as pd

from segmodels.teach.losslab import LAB_LOSSES, LOSS_LABELS, LabRecord, LabSettings, lab_class_weights, run_loss_lab

from ..contract import Job, no_image
from ..losslab_charts import (
    LAST_EVALUATIONS,
    camvid_section,
    false_positives_per_hit,
    final_table,
    iou_figure,
    lab_weights_note,
    lab_weights_table,
    loss_figure,
    precomputed_figure,
    rare_class_verdict,
    run_description,
)
from ..losslab_runs import (
    FOCAL_LOSSES,
    FORMULAS,
    GAMMA_SLIDER_MAX,
    LATEX,
    RUNS_PER_WINDOW,
    STOP_REASONS,
    Admission,
    LabCurves,
    LabView,
    LiveRunGate,
    Precomputed,
    budget_line,
    check_lab_request,
    class_values_text,
    load_precomputed,
    minutes_text,
)
from ..scheduler import FairScheduler, Refused
from ..serving import client_of
from ..session import Request

log = logging.getLogger(__name__)


class LossLab:
    """The tab's server-wide state: the precomputed runs, the gate and the scheduler whose turns
    the live runs take, chunk by chunk. ``mark_busy`` is a context manager held for a whole live
    run (the engine's ``benchmarker.busy``); ``clock`` (seconds) times the runs' budgets."""

    def __init__(
        self,
        precomputed: Precomputed,
        scheduler: FairScheduler,
        gate: LiveRunGate | None = None,
        settings: LabSettings | None = None,
        mark_busy: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.precomputed = precomputed
        self.scheduler = scheduler
        self.settings = settings or LabSettings()
        self.settings.validate()
        self.gate = gate or LiveRunGate(run_s=self.settings.time_budget_s + 10.0, max_hold_s=3 * self.settings.time_budget_s + 30.0)
        self.mark_busy = mark_busy
        self.clock = clock

    def fallback_view(self, loss: str, gamma: float, previous: LabCurves | None, reason: str, retry_in_s: float = 0.0) -> LabView:
        """The precomputed run of ``loss`` with the reason no live run started."""
        run = self.precomputed.runs[loss]
        if reason == "busy":
            why = f"**Another student's live run is training on the server right now** (one at a time, so that everyone's models stay fast); it ends in about {minutes_text(retry_in_s)}."
        else:
            why = f"**You have used your {self.gate.runs_per_window} live runs of the last {self.gate.window_s / 60:.0f} minutes**; your next one is available in {minutes_text(retry_in_s)}."
        gamma_note = f" (precomputed with γ = {run.gamma:g}, not {gamma:g})" if loss in FOCAL_LOSSES and run.gamma is not None and not math.isclose(run.gamma, gamma) else ""
        return LabView(
            status=f"{why} Meanwhile, here is the precomputed run of {run.label}{gamma_note}: the same model and settings, {run.step[-1]} steps.",
            current=run,
            previous=previous,
        )

    async def views(self, loss: Any, gamma: Any, previous: LabCurves | None, address: str, client: str) -> AsyncIterator[LabView]:
        """The views of one click: a message for bad input; the precomputed run when the server
        is busy or the session's budget is spent; else the live run, record by record."""
        try:
            loss, gamma = check_lab_request(loss, gamma)
        except ValueError as error:
            yield LabView(status=f"**Nothing was trained:** {error}")
            return
        admission = self.gate.try_start(client)
        if not admission.granted:
            yield self.fallback_view(loss, gamma, previous, admission.reason, admission.retry_in_s)
            return
        try:
            with self.mark_busy():
                records: list[LabRecord] = []
                async with contextlib.aclosing(self._records_in_turns(loss, gamma, address)) as stream:
                    async for record in stream:
                        if isinstance(record, str):
                            yield self._finished_view(LabCurves.from_records(loss, gamma, records, record), previous, admission.runs_left)
                            return
                        records.append(record)
                        curves = LabCurves.from_records(loss, gamma, records, record.stop_reason)
                        if record.done:
                            yield self._finished_view(curves, previous, admission.runs_left)
                            return
                        yield LabView(status=self._progress(curves), current=curves, previous=previous)
        finally:
            self.gate.finish(admission.token)

    async def _records_in_turns(self, loss: str, gamma: float, address: str) -> AsyncIterator[LabRecord | str]:
        """The run's records, each chunk computed in a worker thread during a scheduler turn,
        until the record marked done; or, when a turn did not come within the time budget or
        the scheduler refused it, a string: the stop reason or the refusal."""
        records = run_loss_lab(loss, gamma, self.settings, threads=1, clock=self.clock)
        deadline = self.clock() + self.settings.time_budget_s
        started = False
        try:
            while True:
                remaining = max(0.0, deadline - self.clock())
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        async with asyncio.timeout(remaining):
                            await stack.enter_async_context(self.scheduler.turn(address, None))
                        record = await anyio.to_thread.run_sync(next, records, None)
                except TimeoutError:
                    yield "server busy"
                    return
                except Refused as error:
                    yield str(error)
                    return
                if record is None:
                    return
                if not started:
                    started, deadline = True, self.clock() + self.settings.time_budget_s
                yield record
                if record.done:
                    return
        finally:
            records.close()

    def _progress(self, curves: LabCurves) -> str:
        rare = self.precomputed.rare_class
        name = self.precomputed.class_names[rare]
        total = f" of {self.settings.max_steps}" if self.settings.max_steps else ""
        return (
            f"**Training live with {curves.label}:** step {curves.step[-1]}{total}, {curves.seconds[-1]:.0f} s of {self.settings.time_budget_s:g} s. "
            f"Rare class ({name}): IoU {curves.final_iou[rare]:.2f}, recall {curves.final_recall[rare]:.2f}."
        )

    def _finished_view(self, curves: LabCurves, previous: LabCurves | None, runs_left: int) -> LabView:
        """The closing view; ``curves.stop_reason`` is a key of :data:`STOP_REASONS` or the
        scheduler's refusal."""
        names, rare = self.precomputed.class_names, self.precomputed.rare_class
        reason = STOP_REASONS.get(curves.stop_reason, curves.stop_reason).format(max_steps=self.settings.max_steps, budget=self.settings.time_budget_s)
        if not curves.step:
            return LabView(status=f"**The live run could not start:** {reason}. " + budget_line(runs_left, self.gate.runs_per_window, self.gate.window_s), previous=previous)
        reference = self.precomputed.runs[curves.loss]
        last = min(LAST_EVALUATIONS, len(curves.step) - 1, len(reference.step) - 1)
        averaged = f"averaged over the last {last} evaluation{'s' if last > 1 else ''}" if last else "at step 0"
        iou = curves.mean_of_last("iou", last) if last else curves.final_iou
        recall = curves.mean_of_last("recall", last) if last else curves.final_recall
        reference_iou = reference.mean_of_last("iou", last)[rare] if last else reference.final_iou[rare]
        return LabView(
            status=(
                f"**Finished {curves.label}** after {curves.step[-1]} steps in {curves.seconds[-1]:.0f} s ({reason}).\n\n"
                f"Per-class IoU {averaged}: {class_values_text(names, iou)}; {names[rare]} recall {recall[rare]:.2f}. "
                f"The precomputed run of the same loss ({reference.step[-1]} steps), {averaged}: {names[rare]} IoU {reference_iou:.2f}. "
                "One evaluation of these curves swings too much to judge on.\n\n"
                + budget_line(runs_left, self.gate.runs_per_window, self.gate.window_s)
            ),
            current=curves,
            previous=previous,
            remember=curves,
        )


# ---------------------------------------------------------------------------- figures


# ---------------------------------------------------------------------------- presenters


def present(view: LabView, precomputed: Precomputed, max_steps: int) -> tuple:
    """(status, loss plot, IoU plot, stored previous run) for Gradio; unchanged parts are skipped."""
    if view.current is None:
        return view.status, gr.skip(), gr.skip(), gr.skip()
    return (
        view.status,
        loss_figure(view.current, view.previous, max_steps),
        iou_figure(view.current, view.previous, precomputed.class_names, precomputed.rare_class, max_steps),
        view.remember if view.remember is not None else gr.skip(),
    )


class LossLabTab:
    """The tab's handlers: a live run (parsed, computed by :meth:`LossLab.views` and
    presented by :func:`present` through a :class:`demo.contract.Job`) and the weight tables."""

    def __init__(self, lab: LossLab, trust_forwarded: bool, camvid_dir, weights_dir):
        self.lab, self.trust_forwarded, self.camvid_dir, self.weights_dir = lab, trust_forwarded, camvid_dir, weights_dir
        self.max_steps = lab.settings.max_steps or lab.precomputed.max_steps
        self.training = Job(None, lambda request: lab.views(**request.choices), lambda request, view: present(view, lab.precomputed, self.max_steps), failed_run)

    async def train(self, loss, gamma, previous, request: gr.Request):
        def parse() -> Request:
            address, session = client_of(request, self.trust_forwarded)
            return no_image(loss=loss, gamma=gamma, previous=previous, address=address, client=session or address)

        async for outputs in self.training.astream(parse):
            yield outputs

    def weights(self) -> tuple[pd.DataFrame, str, str]:
        schemes = lab_class_weights(settings=self.lab.settings)
        return lab_weights_table(schemes, self.lab.precomputed.rare_class), lab_weights_note(schemes), camvid_section(self.camvid_dir, self.weights_dir)


def failed_run(error: Exception):
    """A live run that failed: the student sees a message, the log the details."""
    log.error("loss lab run failed", exc_info=error)
    raise gr.Error(f"The live run failed ({type(error).__name__}); the precomputed curves below still show every loss.") from None


def build(shared) -> gr.Tab:
    """The Loss lab tab: formulas and weights, the live run, the precomputed runs and the verdict."""
    app = shared.app
    precomputed = load_precomputed()
    lab = LossLab(precomputed, app.scheduler, mark_busy=app.engine.benchmarker.busy)
    handlers = LossLabTab(lab, app.config.trust_forwarded, app.config.camvid_dir, app.config.weights_dir)
    max_steps = handlers.max_steps
    choices = [(LOSS_LABELS[loss], loss) for loss in LAB_LOSSES]

    with gr.Tab("Loss lab", id="losslab") as tab:
        gr.Markdown(
            f"Train a tiny U-Net for about {lab.settings.time_budget_s:.0f} s on a Shapes set where **{precomputed.class_names[precomputed.rare_class]}s are rare and small** "
            f"({precomputed.pixel_share[precomputed.rare_class]:.2%} of the pixels), and watch what each loss does to them.",
            latex_delimiters=LATEX,
        )
        with gr.Row(equal_height=True):
            loss_radio = gr.Radio(choices, value="ce", label="Loss", min_width=280)
            gamma_slider = gr.Slider(0.0, GAMMA_SLIDER_MAX, value=2.0, step=0.1, label="γ (focal and weighted focal)", min_width=200)
        train_button = gr.Button(f"Train for ~{lab.settings.time_budget_s:.0f} s", variant="primary")
        status = gr.Markdown(budget_line(RUNS_PER_WINDOW, lab.gate.runs_per_window, lab.gate.window_s))
        with gr.Row():
            loss_plot = gr.Plot(loss_figure(None, None, max_steps), show_label=False, min_width=320)
            iou_plot = gr.Plot(iou_figure(None, None, precomputed.class_names, precomputed.rare_class, max_steps), show_label=False, min_width=320)
        previous_run = gr.State(None, time_to_live=app.config.state_ttl_s)
        with gr.Row():
            gr.Plot(precomputed_figure(precomputed), show_label=False, min_width=320)
            with gr.Column(min_width=320):
                gr.DataFrame(final_table(precomputed), label=f"What each loss reached (precomputed: {run_description(precomputed)})", interactive=False)
                gr.Markdown(rare_class_verdict(precomputed))
        with gr.Accordion("The formulas and the weights", open=True):
            gr.Markdown(FORMULAS, latex_delimiters=LATEX)
            gr.Markdown("### The weights on this lab's training set")
            weights_df = gr.DataFrame(label="Weights and each class's share of the loss (as at the start of training)", interactive=False)
            weights_md = gr.Markdown()
            camvid_md = gr.Markdown()

    train_button.click(handlers.train, [loss_radio, gamma_slider, previous_run], [status, loss_plot, iou_plot, previous_run], api_name="losslab_train", show_progress="hidden",
                       **{**shared.heavy, "api_visibility": "private"})
    tab.select(handlers.weights, None, [weights_df, weights_md, camvid_md], api_name="losslab_weights", show_progress="hidden", **{**shared.light, "api_visibility": "private"})
    return tab


__all__ = [
    "Admission",
    "LabCurves",
    "LabView",
    "LiveRunGate",
    "LossLab",
    "Precomputed",
    "build",
    "camvid_section",
    "check_lab_request",
    "false_positives_per_hit",
    "final_table",
    "iou_figure",
    "lab_weights_note",
    "lab_weights_table",
    "load_precomputed",
    "loss_figure",
    "precomputed_figure",
    "present",
    "rare_class_verdict",
]
