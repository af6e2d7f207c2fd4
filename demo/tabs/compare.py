"""Compare: every chosen model on the current image, one forward pass each, each mask shown
as soon as its model is done, then the comparison table, its per-class IoU, and two charts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr
import numpy as np
import pandas as pd

from segmodels import ARCH_NAMES

from .. import explanations, figures, pictures, text
from ..catalogue import ARCH_ORDER
from ..context import Shared
from ..contract import Job, outdated
from ..core import App
from ..engine import ModelRun
from ..errors import InputError, error_text, raise_for_user, user_message
from ..failures import ModelUnavailable
from ..scores import LATENCY_NOTE, TEST_NOTE, card_miou, card_per_class, card_test, latency_columns, origin_column, rounded, test_standings
from ..session import CurrentImage, PredictionKey, Request, SessionCache, session_of
from ..session_uploads import file_path
from ..view import View, hidden

RUNTIME_NAMES = {"torch": "PyTorch", "torch-bf16": "PyTorch in bfloat16", "onnxruntime": "ONNX Runtime"}
MASKS = tuple(f"mask_{arch}" for arch in ARCH_ORDER)
# "table" and "per_class" are the data an API client reads; the page shows them as
# "table_page" and "per_class_page" (figures.table_html: a card per model on a phone).
VIEW = View("status", "legend", "image", "truth", *MASKS, "table", "scatter", "bars", "per_class", "table_page", "per_class_page", "current", "session")
RESTYLE = View("truth", *MASKS)
SHOWN = View("status", "legend", "image", "truth", *MASKS, "table", "scatter", "bars", "per_class", "table_page", "per_class_page")
TABLE_LABEL = "Comparison on this image"


def run_inputs(example, image_file, mask_file, set_name, models, depth, opacity) -> tuple:
    """A click's raw inputs, as the queue note and the run that follows it both see them."""
    return example, file_path(image_file), file_path(mask_file), set_name, models, depth, opacity


@dataclass
class CompareResult:
    """The chosen models on one image: their runs, the comparison table (with the cards' test
    mIoU, its interval and each model's paired-bootstrap standing against the best) and
    per-class IoU (on the image when it has ground truth, else from the model cards)."""

    image: CurrentImage
    runs: list[ModelRun]
    table: pd.DataFrame
    per_class: pd.DataFrame
    per_class_source: str


class Compare:
    """The Compare tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app
        self.run = Job("compare", self.compute, self.present, raise_for_user, self.stopped)
        self.redraw = Job(None, self.kept_masks, self.present_redraw, raise_for_user)

    # ------------------------------------------------------------------ typed

    def set_for(self, example, image_file, set_name) -> str:
        """The set whose models run: ``set_name``, unless the request names an example that the
        page never offers with that set (an API call with ``example="shapes-1000"`` on a server
        that opens on CamVid): then the example's own set, so it runs with its ground truth."""
        set_name = self.app.check.set_name(set_name)
        if image_file or not isinstance(example, str):
            return set_name
        named = self.app.catalogue.example(example)
        if named is None or named in self.app.choices.gallery_examples(set_name) or named.dataset not in self.app.choices.sets():
            return set_name
        return named.dataset

    def parse(self, example, image_file, mask_file, set_name, models, depth, opacity, session) -> Request:
        """The click checked and its image decoded: the chosen models in display order, the
        depth, the opacity."""
        set_name = self.set_for(example, image_file, set_name)
        archs = self.app.check.models(set_name, models)
        depth = self.app.check.depth(depth)
        current = self.app.images.current(example, image_file, mask_file, set_name)
        return Request(current, session_of(session), archs, depth, self.app.check.opacity(opacity))

    def runs(self, current: CurrentImage, archs: list[str], depth: int) -> Iterator[ModelRun]:
        """Each model on the same tensor, yielded as soon as it is done."""
        return self.app.engine.run_models(current.set_name, archs, current.image, depth, current.gt, current.info)

    def compute(self, request: Request) -> Iterator[list[ModelRun] | CompareResult]:
        """The runs so far (none at first), one more as each model is done, then the result.
        Each mask is remembered in the session while the page still shows its image."""
        current, runs = request.current, []
        yield []
        for run in self.runs(current, request.archs, request.depth):
            runs.append(run)
            if run.ok and not request.stale:
                request.session.remember(current, PredictionKey(run.arch, run.depth), run.labels)
            yield list(runs)
        yield self.result(current, runs)

    def result(self, current: CurrentImage, runs: list[ModelRun]) -> CompareResult:
        if not any(run.ok for run in runs):
            raise ModelUnavailable("No model could run. " + " ".join(run.error for run in runs))
        engine, info = self.app.engine, current.info
        engine.time_together(current.set_name, runs, current.size)
        rows, per_class = [], []
        standings = test_standings(engine, current.set_name, runs)
        for run, standing in zip(runs, standings):
            test = card_test(engine, current.set_name, run)
            interval = test.miou_interval if test is not None else None
            rows.append({
                "Model": run.name,
                "mIoU (this image)": rounded(run.metrics["miou"] if run.metrics else None, 4),
                "mIoU (test)": rounded(test.miou if test is not None else None, 4),
                "Test 95% interval": f"[{interval.low:.3f}, {interval.high:.3f}]" if interval is not None else "-",
                "Test vs best": standing,
                "mIoU (card, val set)": card_miou(engine, current.set_name, run),
                **latency_columns(run.latency),
                "GFLOPs": rounded(run.flops / 1e9 if run.flops is not None else None, 3),
                "Params (M)": rounded(run.params / 1e6 if run.params is not None else None, 3),
                **origin_column(run.latency, len(runs), run.timed_together),
                "Status": "ok" if run.ok else "failed (see above)",
            })
            if current.gt is not None:
                values = run.metrics["per_class_iou"] if run.metrics else [None] * info.num_classes
            else:
                values = card_per_class(engine, current.set_name, run.arch, info) if run.ok else [None] * info.num_classes
            per_class.append({"Model": run.name, **{f"IoU {name}": rounded(v, 4) for name, v in zip(info.class_names, values)}})
        source = "this image" if current.gt is not None else "validation set, from the model cards"
        return CompareResult(current, runs, pd.DataFrame(rows), pd.DataFrame(per_class), source)

    def compare(self, example, image_file, mask_file, set_name, models, depth) -> CompareResult:
        """Every chosen model on the image, one forward pass each (tests and scripts)."""
        *_, result = self.compute(self.parse(example, image_file, mask_file, set_name, models, depth, None, None))
        return result

    # ------------------------------------------------------------------ presenters

    def queue_note(self, example, image_file, mask_file, set_name, models, depth, opacity, session=None) -> str:
        """Shown at once when Run is pressed: what is wrong with the request (it stays on the
        page, beside the button), else how many runs are ahead of it on the device. The parsed
        request is kept in the session for the run that follows."""
        try:
            request = self.parse(example, image_file, mask_file, set_name, models, depth, opacity, session)
        except Exception as error:  # noqa: BLE001 - the run that follows reports it too
            return error_text(user_message(error))
        request.session.keep_parsed(run_inputs(example, image_file, mask_file, set_name, models, depth, opacity), request)
        ahead = self.app.scheduler.ahead()
        return f"Waiting for the device: {ahead} run{'s' if ahead != 1 else ''} ahead of yours ({self.at_a_time()}, shared fairly)…" if ahead else "Starting…"

    def at_a_time(self) -> str:
        lanes = self.app.scheduler.lanes
        return "one at a time" if lanes == 1 else f"{lanes} at a time"

    def next_step(self, current: CurrentImage, archs: list[str], depth: int, done: int) -> str:
        """What happens next, said honestly: the models now in the engine's lanes run, or their
        masks for this image are already known (an earlier request computed them) and are shared."""
        engine, total = self.app.engine, len(archs)
        steps = [(f"{ARCH_NAMES[arch]} ({index + 1} of {total})", engine.is_shared(current.set_name, arch, current.image, depth))
                 for index, arch in enumerate(archs[done:done + engine.lanes], start=done)]
        shared = [step for step, is_shared in steps if is_shared]
        running = [step for step, is_shared in steps if not is_shared]
        parts = []
        if shared:
            masks = "the mask" if len(shared) == 1 else "the masks"
            parts.append(f"sharing {masks} of {' and '.join(shared)}, computed for an earlier request on this image")
        if running:
            parts.append(f"running {' and '.join(running)}")
        return ", and ".join(parts) + "…"

    def stream(self, example: str | None = None, image_file: str | None = None, mask_file: str | None = None, set_name: str | None = None,
               models: list[str] | None = None, depth: float | None = None, opacity: float = 0.8, session: SessionCache | None = None):
        """Run the chosen models on the image, streaming each mask as soon as its model is
        done; the last update repeats every value, so an API client gets a complete result."""
        def parse() -> Request:
            inputs = run_inputs(example, image_file, mask_file, set_name, models, depth, opacity)
            request = session_of(session).take_parsed(inputs) or self.parse(example, image_file, mask_file, set_name, models, depth, opacity, session)
            request.session.show(request.current.identity)  # its first update shows this image and names it
            return request

        yield from self.run.stream(parse)

    def stopped(self, request: Request) -> tuple:
        return VIEW(status=f"Stopped: the image changed while the models ran on **{request.current.label}**; its results are not shown. Press **Run the models** again.")

    def present(self, request: Request, step: list[ModelRun] | CompareResult) -> tuple:
        """The first update shows the image and a waiting table; each run its mask; the result everything."""
        current, archs, depth = request.current, request.archs, request.depth
        if isinstance(step, CompareResult):
            return self.present_result(request, step)
        if step:
            run = step[-1]
            slot = self.mask(request, run.arch, run.labels) if run.ok else gr.update(value=None, label=f"{ARCH_NAMES[run.arch]}: unavailable (see status)")  # a value alone: no component rebuilt
            following = self.next_step(current, archs, depth, len(step)) if len(step) < len(archs) else "making the table…"
            return VIEW(status=f"**{current.label}**: {following}", **{f"mask_{run.arch}": slot})
        waiting = pd.DataFrame({"Model": [ARCH_NAMES[a] for a in archs], "Status": "waiting…"})
        return VIEW(
            status=f"**{current.label}**: {self.next_step(current, archs, depth, 0)}", legend=self.legend(current),
            image=self.image(request), truth=self.truth(request), current=current.summary(), table=gr.update(value=waiting, visible=False),
            table_page=gr.update(value=figures.table_html(waiting, TABLE_LABEL), visible=True), scatter=hidden(), bars=hidden(), per_class=hidden(), per_class_page=hidden(),
            **{f"mask_{a}": gr.update(value=None, label=self.app.engine.label(current.set_name, a, depth) if a in archs else ARCH_NAMES[a], visible=a in archs) for a in ARCH_ORDER},
        )

    def image(self, request: Request) -> str:
        return request.picture("image", lambda: self.app.files.path(request.current.image))

    def mask(self, request: Request, arch: str, labels: np.ndarray) -> str:
        """``arch``'s mask over the image, drawn once per request."""
        current = request.current
        return request.picture(f"mask_{arch}", lambda: self.app.files.path(pictures.overlay(current.image, labels, current.info, request.opacity)))

    def truth(self, request: Request) -> str | None:
        current = request.current
        if current.gt is None:
            return None
        return request.picture("truth", lambda: self.app.files.path(pictures.overlay(current.image, current.gt, current.info, request.opacity)))

    @staticmethod
    def legend(current: CurrentImage) -> str:
        return pictures.legend_html(current.info, set(np.unique(current.gt).tolist()) if current.gt is not None else None)

    def present_result(self, request: Request, result: CompareResult) -> tuple:
        """The status, every mask again, the tables and the charts (a complete update)."""
        current, runs = request.current, result.runs
        ok = sum(run.ok for run in runs)
        runtimes = " and ".join(sorted({RUNTIME_NAMES[run.backend] for run in runs if run.ok}))
        device = self.app.engine.device.type.upper()
        reused = [run.name for run in runs if run.ok and run.reused]
        if reused and len(reused) == ok:
            first = f"{ok} of {len(runs)} models ran on **{device}** ({runtimes}) for an earlier request on this same image; their masks were shared, so no forward pass ran now."
        else:
            first = f"{ok} of {len(runs)} models ran on **{device}** ({runtimes}), one forward pass each"
            first += f"; {', '.join(reused)} had already run on this same image for an earlier request, so {'its mask was' if len(reused) == 1 else 'their masks were'} shared." if reused else "."
        lines = [f"**{current.label}** ({current.size[1]}x{current.size[0]} px): {first}"]
        lines += [f"- **{run.name}**: {run.error}" for run in runs if not run.ok]
        lines += [f"- {note}" for note in current.notes]
        if result.table["mIoU (test)"].notna().any():
            lines.append(f"\n<small>{TEST_NOTE}</small>")
        lines.append(f"\n<small>{LATENCY_NOTE}</small>")
        has_gt = current.gt is not None
        masks = {f"mask_{run.arch}": self.mask(request, run.arch, run.labels) for run in runs if run.ok}
        return VIEW(
            status="\n".join(lines), legend=self.legend(current), image=self.image(request), truth=self.truth(request),
            **{name: masks.get(name) for name in MASKS}, table=result.table, scatter=gr.update(value=figures.miou_cost_figure(result.table, has_gt), visible=True),
            bars=gr.update(value=figures.per_class_figure(result.per_class, current.info.class_names, result.per_class_source), visible=True),
            per_class=gr.update(value=result.per_class, label=f"Per-class IoU ({result.per_class_source})"), table_page=figures.table_html(result.table, TABLE_LABEL),
            per_class_page=gr.update(value=figures.table_html(result.per_class, f"Per-class IoU ({result.per_class_source})"), visible=True), current=current.summary(),
            session=request.session,
        )

    def restyle(self, example, image_file, mask_file, set_name, depth, opacity, session):
        """A new mask opacity: redraw the ground truth and this image's masks; no model runs."""
        def parse() -> Request:
            opacity_ = self.app.check.opacity(opacity)
            current = self.app.images.current(example, image_file, mask_file, set_name)
            return Request(current, session_of(session), self.app.choices.archs(current.set_name), self.app.check.depth(depth), opacity_)

        return self.redraw.answer(parse)

    def kept_masks(self, request: Request) -> dict[str, np.ndarray]:
        """{arch: mask} of the chosen depth's predictions this session keeps for the image."""
        predictions = request.session.predictions_for(request.current)
        keys = {arch: PredictionKey(arch, self.app.engine.depth_for(request.current.set_name, arch, request.depth)) for arch in ARCH_ORDER if arch in request.archs}
        return {arch: predictions[key] for arch, key in keys.items() if key in predictions}

    def present_redraw(self, request: Request, masks: dict[str, np.ndarray]) -> tuple:
        return RESTYLE(truth=self.truth(request), **{f"mask_{arch}": self.mask(request, arch, labels) for arch, labels in masks.items()})

    def show_image(self, example, image_file, mask_file, set_name, opacity, identity, session):
        """A new image was picked: show it (and its ground truth) and clear the results of
        another image."""
        stale = outdated("compare", identity, session)
        cleared = {name: hidden() for name in (*MASKS, "table", "scatter", "bars", "per_class", "table_page", "per_class_page")} if stale else {}
        try:
            current = self.app.images.current(example, image_file, mask_file, set_name)
            request = Request(current, session_of(session), opacity=self.app.check.opacity(opacity))
        except (InputError, ModelUnavailable):  # the line under the controls says why
            return SHOWN(status="", image=None, truth=None, **cleared)
        status = "Press **Run the models** to segment this image with every chosen model." if stale else gr.skip()
        return SHOWN(status=status, legend=self.legend(current), image=self.image(request), truth=self.truth(request), **cleared)


def build(shared: Shared) -> gr.Tab:
    """The Compare tab, its components and its events."""
    tab = Compare(shared.app)
    set_name = shared.set_radio.value
    image_style = dict(interactive=False, format="png", buttons=["fullscreen"], elem_classes="seg-img")
    with gr.Tab("Compare", id="compare") as compare_tab:
        run_btn = gr.Button("Run the models", variant="primary", size="lg", interactive=bool(shared.app.choices.sets()))
        status = gr.Markdown(label="Status", elem_id="compare-status")
        legend = gr.HTML(pictures.legend_html(shared.app.choices.info(set_name)), label="Class colours")
        with gr.Row(equal_height=True):
            image = gr.Image(label="Image", height=300, min_width=150, elem_id="input-image", **image_style)
            truth = gr.Image(label="Ground truth", height=300, min_width=150, elem_id="gt-image", **image_style)
        with gr.Row(equal_height=True):
            masks = {f"mask_{a}": gr.Image(label=ARCH_NAMES[a], height=260, min_width=150, visible=False, elem_id=f"mask-{a}", **image_style) for a in ARCH_ORDER}
        table = gr.DataFrame(label=TABLE_LABEL, interactive=False, visible=False)
        table_page = gr.HTML(label="Comparison table (as shown)", visible=False, elem_id="compare-table", padding=False)
        with gr.Row():
            scatter = gr.Plot(label="mIoU vs compute", show_label=False, min_width=320, visible=False, elem_id="compare-scatter")
            bars = gr.Plot(label="Per-class IoU chart", show_label=False, min_width=320, visible=False, elem_id="compare-bars")
        per_class = gr.DataFrame(label="Per-class IoU", interactive=False, visible=False)
        per_class_page = gr.HTML(label="Per-class IoU table (as shown)", visible=False, elem_id="per-class-table", padding=False)
        with gr.Accordion("What am I looking at?", open=False):
            gr.Markdown(text.COMPARE, latex_delimiters=text.LATEX)
        with gr.Accordion("Inside the architectures, and mIoU of an image vs of a dataset", open=False):
            gr.Markdown(explanations.architectures(shared.app.config.weights_dir), latex_delimiters=text.LATEX)

    components = dict(status=status, legend=legend, image=image, truth=truth, **masks, table=table, scatter=scatter, bars=bars, per_class=per_class,
                      table_page=table_page, per_class_page=per_class_page, current=shared.current_md, session=shared.session)
    inputs = [*shared.image_inputs, shared.models_cb, shared.depth_sl, shared.opacity_sl, shared.session]
    run_btn.click(tab.queue_note, inputs, status, show_progress="hidden", api_name="compare_queue", **shared.light).then(
        shared.on_device(tab.stream), inputs, VIEW.components(**components),
        api_name="compare", show_progress="minimal", show_progress_on=[status], **(shared.heavy | {"api_visibility": "public"}),
    )
    shared.opacity_sl.release(
        tab.restyle, [*shared.image_inputs, shared.depth_sl, shared.opacity_sl, shared.session], RESTYLE.components(**components),
        show_progress="hidden", api_name="restyle", **shared.light,
    )
    shared.image_changed.change(
        tab.show_image,
        [*shared.image_inputs, shared.opacity_sl, shared.image_changed, shared.session],
        SHOWN.components(**components),
        show_progress="hidden",
        api_name="compare_image",
        **shared.light,
    )
    return compare_tab
