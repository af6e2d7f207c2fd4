"""The dashboard's layout, top to bottom: the introduction, the controls every tab shares
(the image and the models), then one tab per idea, each built by its module in
:mod:`demo.tabs` from the :class:`demo.context.Shared` controls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gradio as gr
from starlette.middleware import Middleware

from . import admission, hardening, serving, text, uploads
from .config import ASSETS_DIR, DemoConfig
from .context import Shared
from .controls import PICKED, PREVIEW, SET_CHANGED, Controls, checked_by_callbacks, upload_help
from .core import App
from .session import SessionCache
from .tabs import tab_modules

log = logging.getLogger(__name__)

CSS = """
.seg-img img { width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
.class-legend { padding: 0.2em 0.4em; }
.inline-error { color: #b91c1c; font-weight: 600; margin: 0.3em 0; }
/* Results tables (demo.figures.table_html): cells wrap between words, never inside one. */
.results-table { width: 100%; }
.results-table .results-label { font-weight: 600; margin: 0.2em 0 0.4em; }
.results-table table { width: 100%; border-collapse: collapse; font-size: 0.92em; line-height: 1.35; }
.results-table th, .results-table td { padding: 0.35em 0.45em; border-bottom: 1px solid var(--border-color-primary); text-align: left; vertical-align: top;
  overflow-wrap: normal; word-break: normal; hyphens: manual; }
.results-table thead th { background: var(--background-fill-secondary); font-weight: 600; }
.results-table tbody th { font-weight: 600; white-space: nowrap; }
.results-table .num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
/* Markdown tables (Gradio breaks their words anywhere): whole words, the table scrolling sideways on its own if it must. */
.prose table { display: block; max-width: 100%; overflow-x: auto; }
.prose table th, .prose table td { overflow-wrap: normal !important; word-break: normal !important; hyphens: manual; }
/* Gradio's own progress overlay: no red "Error" pill over a message (the message says it, beside the button, and a toast
   repeats it), and no time estimate (Gradio's average of earlier events, not of this one; the status line says what runs). */
[data-testid="status-tracker"]:has(> .error) { display: none !important; }
[data-testid="status-tracker"] .progress-text, [data-testid="status-tracker"] .meta-text, [data-testid="status-tracker"] .meta-text-center,
[data-testid="status-tracker"] .eta-bar { display: none !important; }
/* Thumbnails: a quick second tap is a tap, not a double-tap zoom that swallows it. */
#examples button { touch-action: manipulation; }
@media (max-width: 640px) {  /* a phone: images two a row, as tall as their picture, not a fixed 300 px */
  .seg-img.block, .seg-img .image-container, .seg-img .image-frame, .seg-img img { height: auto !important; }
  .seg-img .image-container button, .seg-img .image-frame { width: 100% !important; }
  /* a results table becomes a card per row: its name, then each value beside its column's name */
  .results-table thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  .results-table table, .results-table tbody, .results-table tr { display: block; width: 100%; }
  .results-table tr { border: 1px solid var(--border-color-primary); border-radius: 8px; margin: 0 0 0.6em; padding: 0.2em 0.5em; }
  .results-table tbody th { display: block; border: none; font-size: 1.08em; padding: 0.3em 0; }
  .results-table td { display: flex; justify-content: space-between; align-items: baseline; gap: 0.8em; border: none;
                      border-top: 1px solid var(--border-color-primary); padding: 0.3em 0; text-align: right; }
  .results-table td::before { content: attr(data-label); text-align: left; color: var(--body-text-color-subdued); flex: 0 0 auto; max-width: 55%; }
  .results-table td.num { white-space: normal; }
  .prose table th, .prose table td { padding: 0.35em 0.45em !important; }  /* room for whole words on a narrow screen */
}
"""


FIRST_SET_WAIT_S = 120.0  # the server answers once the default set's models are loaded and have made a first pass, so the first Run is not a cold one


def launch_kwargs(config: DemoConfig, clock: Callable[[], float] = time.monotonic) -> dict:
    """Settings for ``demo.launch`` that a public demo needs. ``clock`` refills the API rate
    limit and measures the admission's and the result readers' grace periods (tests pass a fake one)."""
    assets = ASSETS_DIR.resolve()
    upload_limit = config.max_uploads * config.max_file_size + 2**20
    upload_folder = uploads.UploadFolder(uploads.own_upload_folder, config.upload_cap_mb * 2**20, config.upload_timeout_s)
    return {
        "app_kwargs": {
            "middleware": [
                Middleware(hardening.SecurityHeaders, frame_ancestors=config.frame_ancestors),
                Middleware(serving.ApiRateLimit, burst=config.api_burst, per_second=config.api_per_second, trust_forwarded=config.trust_forwarded, clock=clock),
                Middleware(
                    uploads.UploadGuard, folder=upload_folder, max_files=config.max_uploads, max_bytes=upload_limit, reserve_bytes=config.disk_reserve_mb * 2**20, idle_timeout_s=config.upload_idle_s
                ),
                Middleware(serving.BodyLimit, max_body=config.max_body, max_upload=upload_limit, idle_timeout_s=config.max_body_idle_s),
                Middleware(
                    admission.Admission,
                    per_client=config.per_client_jobs,
                    per_api_client=config.api_burst,
                    model_jobs=config.address_model_jobs,
                    light_jobs=config.address_light_jobs,
                    waiting_per_address=config.waiting_per_address,
                    max_string=config.max_string,
                    grace_s=config.listen_grace_s,
                    trust_forwarded=config.trust_forwarded,
                    clock=clock,
                ),
                Middleware(serving.ResultReaders, grace_s=config.result_grace_s, clock=clock),
            ]
        },
        "max_threads": 64,
        "max_file_size": config.max_file_size,
        "allowed_paths": [str(assets)] if assets.is_dir() else [],
        "show_error": False,
        "footer_links": [],
        "enable_monitoring": False,
        "ssr_mode": False,
        "mcp_server": False,
        "run_history": False,
        "state_session_capacity": config.max_sessions,
        "theme": gr.themes.Soft(text_size="lg"),
        "css": CSS,
    }


def serve(demo: gr.Blocks, config: DemoConfig, host: str, port: int, block: bool = True, **launch_options) -> str:
    """Launch ``demo`` hardened for a public classroom (:mod:`demo.hardening`): the open-file
    limit raised first, then the running server's header timeout, keep-alive timeout and
    connection cap set, and every log handler rate-limited; returns the local URL (and
    blocks until Ctrl-C or SIGTERM when ``block``)."""
    soft_limit, _ = hardening.raise_fd_limit()
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, **launch_kwargs(config), **launch_options)
    cap = hardening.connection_cap(config.max_connections, soft_limit)
    per_address = None if config.trust_forwarded else min(config.connections_per_address, cap)
    hardening.harden_server(demo.server.config, cap, config.header_timeout_s, per_address=per_address)
    hardening.rate_limit_logs()
    if block:
        demo.block_thread()
    return url


def build_demo(config: DemoConfig | None = None) -> gr.Blocks:
    """The dashboard as a ``gr.Blocks`` with its queue configured (not yet launched)."""
    config = config or DemoConfig()
    app = App(config)
    choices = app.choices
    controls = Controls(app)
    set_name = choices.default_set()
    archs = choices.archs(set_name)
    if config.warm_up:
        app.engine.warm_up(app.images.usual_sizes())

    with gr.Blocks(title="Semantic segmentation dashboard", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        demo.dashboard = app  # for tests and app.py
        gr.Markdown(text.INTRO, latex_delimiters=text.LATEX)
        if not choices.sets():
            gr.Markdown(text.NO_MODELS.format(weights_dir=config.weights_dir))
        if app.catalogue.camvid_problem:
            gr.Markdown(f"*{app.catalogue.camvid_problem}*")

        # The image and the models, shared by every tab: columns that wrap on a phone.
        with gr.Group(elem_id="controls"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=300):
                    with gr.Row():
                        set_radio = checked_by_callbacks(gr.Radio(choices.set_choices(), value=set_name, label="Model set", info="Only sets with trained weights are offered.", min_width=240))
                        # Any example key passes to the callbacks, which check it (an API client may name another set's example).
                        example_dd = gr.Dropdown(
                            choices.example_choices(set_name), value=choices.default_example(set_name), label="Example (with ground truth)", min_width=200, elem_id="example", allow_custom_value=True
                        )
                    gallery = gr.Gallery(
                        app.images.thumbnails(set_name),
                        label="Tap an example",
                        columns=8,
                        rows=1,
                        height=120,
                        allow_preview=False,
                        object_fit="cover",
                        buttons=[],
                        elem_id="examples",
                        selected_index=controls.thumbnail_of(set_name, choices.default_example(set_name)),
                    )
                with gr.Column(scale=2, min_width=280):
                    models_cb = checked_by_callbacks(gr.CheckboxGroup(choices.model_choices(set_name), value=archs, label="Models to run"))
                    with gr.Row():
                        shallowest, deepest = choices.depth_range()
                        # Gradio needs two values; with a single depth (no prunable model) the slider stays hidden.
                        depth_sl = gr.Slider(shallowest, max(deepest, shallowest + 1), value=deepest, step=1,
                                              label="U-Net++ depth (L1 = most pruned)", visible=bool(choices.prunable(set_name, archs)), min_width=150)
                        opacity_sl = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="Mask opacity", min_width=150)
            with gr.Accordion("…or upload your own image (and, optionally, its ground-truth mask)", open=False):
                with gr.Row():
                    image_file = gr.File(label="Image", file_types=["image"], type="filepath", min_width=240, elem_id="image-upload")
                    mask_file = gr.File(label="Ground-truth mask (optional)", file_types=["image"], type="filepath", min_width=240, elem_id="mask-upload")
                upload_md = gr.Markdown(upload_help(set_name), label="What the uploads may be", elem_id="upload-help")
            current_md = gr.Markdown(label="Current image", padding=True, elem_id="current-image")

        shared = Shared(
            app,
            set_radio,
            example_dd,
            image_file,
            mask_file,
            models_cb,
            depth_sl,
            opacity_sl,
            session=gr.State(SessionCache(), time_to_live=config.state_ttl_s),
            current_md=current_md,
            image_changed=gr.State(""),
        )
        with gr.Tabs(overflow_behavior="wrap"):  # every tab stays reachable on a phone, none behind a "..." menu
            for module in tab_modules():
                module.build(shared)

        # ------------------------------------------------------------------ the shared controls' events
        gr.on(
            [demo.load, set_radio.change, example_dd.change, image_file.change, mask_file.change],
            controls.preview,
            [*shared.image_inputs, shared.session],
            PREVIEW.components(current=current_md, image_changed=shared.image_changed),
            trigger_mode="always_last",
            show_progress="hidden",
            api_name="preview",
            **shared.light,
        )
        set_radio.change(
            controls.set_changed,
            [set_radio, example_dd],
            SET_CHANGED.components(models=models_cb, example=example_dd, gallery=gallery, depth=depth_sl, upload_help=upload_md),
            show_progress="hidden",
            api_name="set_changed",
            **shared.light,
        )
        models_cb.change(controls.models_changed, [set_radio, models_cb], depth_sl, show_progress="hidden", api_name="models_changed", **shared.light)
        # Every tap is sent ("multiple": Gradio's default drops a tap made while the one before is under way, and its "always_last"
        # re-sends the first tap's index), and taps run one at a time in the order made, so the last one wins; the highlight follows
        # the example actually chosen, however it was chosen, in the same order.
        in_order = dict(trigger_mode="multiple", show_progress="hidden", api_visibility="private", concurrency_id="gallery", concurrency_limit=1)
        gallery.select(controls.pick_example, set_radio, PICKED.components(example=example_dd, image_file=image_file, mask_file=mask_file), api_name="pick_example", **in_order)
        gr.on(
            [example_dd.change, image_file.change],
            lambda set_name, example, upload: controls.highlight(set_name, None if upload else example),
            [set_radio, example_dd, image_file],
            gallery,
            api_name="highlight",
            **in_order,
        )
        example_dd.input(lambda: (None, None), None, [image_file, mask_file], show_progress="hidden", api_name="clear_uploads", **shared.light)
        demo.unload(app.session_ended)

    demo.queue(max_size=config.queue_max_size, default_concurrency_limit=config.light_concurrency, api_open=False)
    if config.warm_up and not app.engine.first_set_warm.wait(FIRST_SET_WAIT_S):
        log.warning("the default set's models were not ready after %.0f s; serving anyway", FIRST_SET_WAIT_S)
    return demo


__all__ = ["build_demo", "launch_kwargs", "serve"]
