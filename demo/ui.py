"""The Gradio Blocks layout and its events. All logic lives in :mod:`demo.callbacks`."""

from __future__ import annotations

import gradio as gr
from starlette.middleware import Middleware

from segmodels import ARCH_NAMES, ARCHITECTURES

from . import figures, serving, text
from .callbacks import Dashboard
from .config import ASSETS_DIR, DemoConfig

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
MODELS = "models"  # the one concurrency group of every event that runs a model
LIGHT = "light"  # cheap events (previews, redraws, curves)

CSS = """
.seg-img img { width: 100% !important; height: 100% !important; object-fit: contain; image-rendering: pixelated; }
.class-legend { padding: 0.2em 0.4em; }
"""


def launch_kwargs(config: DemoConfig) -> dict:
    """Settings for ``demo.launch`` that a public demo needs."""
    assets = ASSETS_DIR.resolve()
    upload_limit = config.max_uploads * config.max_file_size + 2**20
    return {
        "app_kwargs": {"middleware": [Middleware(serving.BodyLimit, max_body=config.max_body, max_upload=upload_limit), Middleware(serving.ResultReaders, grace_s=config.result_grace_s)]},
        "max_threads": 64,
        "max_file_size": config.max_file_size,
        "allowed_paths": [str(assets)] if assets.is_dir() else [],
        "show_error": False,
        "footer_links": [],
        "enable_monitoring": False,
        "ssr_mode": False,
        "mcp_server": False,
        "run_history": False,
        "state_session_capacity": 1000,
        "theme": gr.themes.Soft(text_size="lg"),
        "css": CSS,
    }


def build_demo(config: DemoConfig | None = None) -> gr.Blocks:
    """The dashboard as a ``gr.Blocks`` with its queue configured (not yet launched)."""
    config = config or DemoConfig()
    app = Dashboard(config)
    sets = app.set_choices()
    set_name = app.default_set()
    archs = app.archs(set_name)
    arch_choices = app.model_choices(set_name)
    example = app.default_example(set_name)

    if config.warm_up:
        app.engine.warm_up(app.usual_sizes())

    with gr.Blocks(title="Semantic segmentation dashboard", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        demo.dashboard = app  # for tests and app.py
        session = gr.State(None, time_to_live=config.state_ttl_s)

        gr.Markdown(text.INTRO, latex_delimiters=LATEX)
        if not sets:
            gr.Markdown(text.NO_MODELS.format(weights_dir=config.weights_dir))
        if app.camvid_problem:
            gr.Markdown(f"*{app.camvid_problem}*")

        # The image and the models, shared by every tab. A row of columns that wrap on a phone.
        with gr.Group(elem_id="controls"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=3, min_width=300):
                    with gr.Row():
                        set_radio = gr.Radio(sets, value=set_name, label="Model set", info="Only sets with trained weights are offered.", min_width=240)
                        example_dd = gr.Dropdown(app.example_choices(), value=example, label="Example (with ground truth)", min_width=200)
                    gallery = gr.Gallery(app.thumbnails(set_name), label="Tap an example", columns=8, rows=1, height=120, allow_preview=False, object_fit="cover", buttons=[], elem_id="examples")
                with gr.Column(scale=2, min_width=280):
                    models_cb = gr.CheckboxGroup(arch_choices, value=archs, label="Models to run")
                    with gr.Row():
                        depth_sl = gr.Slider(1, 4, value=4, step=1, label="U-Net++ depth (L1 = most pruned)", visible="unetpp" in archs, min_width=150)
                        opacity_sl = gr.Slider(0.0, 1.0, value=0.8, step=0.05, label="Mask opacity", min_width=150)
            with gr.Accordion("…or upload your own image (and, optionally, its ground-truth mask)", open=False):
                with gr.Row():
                    image_file = gr.File(label="Image (PNG, JPEG, WebP, BMP, TIFF, GIF; at most 10 MB)", file_types=["image"], type="filepath", height=110, min_width=240)
                    mask_file = gr.File(label="Ground-truth mask: class ids (grey or palette PNG) or the class colours", file_types=["image"], type="filepath", height=110, min_width=240)
            source_md = gr.Markdown(padding=True)

        with gr.Tabs():
            with gr.Tab("Compare", id="compare"):
                run_btn = gr.Button("Run the models", variant="primary", size="lg", interactive=bool(sets))
                status_md = gr.Markdown()
                legend = gr.HTML(figures.legend_html(app.info(set_name)))
                with gr.Row(equal_height=True):
                    input_img = gr.Image(label="Image", interactive=False, format="webp", height=300, min_width=220, buttons=["fullscreen"], elem_id="input-image", elem_classes="seg-img")
                    gt_img = gr.Image(label="Ground truth", interactive=False, format="webp", height=300, min_width=220, buttons=["fullscreen"], elem_id="gt-image", elem_classes="seg-img")
                with gr.Row(equal_height=True):
                    model_imgs = [gr.Image(label=ARCH_NAMES[a], interactive=False, format="webp", height=260, min_width=200, visible=a in archs, buttons=["fullscreen"], elem_id=f"mask-{a}", elem_classes="seg-img") for a in ARCHITECTURES]
                table = gr.DataFrame(label="Comparison on this image", interactive=False, pinned_columns=1, elem_id="compare-table", visible=False)
                with gr.Row():
                    scatter = gr.Plot(label="mIoU vs latency", show_label=False, min_width=320, visible=False)
                    bars = gr.Plot(label="Per-class IoU", show_label=False, min_width=320, visible=False)
                with gr.Accordion("What am I looking at?", open=True):
                    gr.Markdown(text.COMPARE, latex_delimiters=LATEX)

            with gr.Tab("U-Net++ pruning", id="pruning") as pruning_tab:
                gr.Markdown(text.PRUNING, latex_delimiters=LATEX)
                prune_btn = gr.Button("Run U-Net++ at depths L1, L2, L3, L4", variant="primary", interactive=bool(sets))
                prune_md = gr.Markdown()
                with gr.Row(equal_height=True):
                    prune_imgs = [gr.Image(label=f"U-Net++ L{d}", interactive=False, format="webp", height=260, min_width=200, buttons=["fullscreen"], elem_classes="seg-img") for d in range(1, 5)]
                prune_table = gr.DataFrame(label="Pruning trade-off on this image", interactive=False, elem_id="pruning-table")
                prune_plot = gr.Plot(label="mIoU vs latency per depth", show_label=False)

            with gr.Tab("Receptive field", id="receptive") as receptive_tab:
                gr.Markdown(text.RECEPTIVE_FIELD, latex_delimiters=LATEX)
                rf_btn = gr.Button("Show the receptive fields of the chosen models", variant="primary", interactive=bool(sets))
                rf_md = gr.Markdown()
                rf_plot = gr.Plot(label="Theoretical receptive field by layer", show_label=False)
                with gr.Row(equal_height=True):
                    click_img = gr.Image(label="Click a pixel of this image", interactive=False, format="webp", height=340, min_width=260, buttons=[], elem_id="rf-click-image")
                    erf_md = gr.Markdown("Click on the image: the effective receptive field of that pixel appears below for each chosen model.")
                with gr.Row(equal_height=True):
                    erf_imgs = [gr.Image(label=ARCH_NAMES[a], interactive=False, format="webp", height=260, min_width=200, visible=False, buttons=["fullscreen"], elem_classes="seg-img") for a in ARCHITECTURES]
                dilation_plot = gr.Plot(label="Dilated 3x3 kernels", show_label=False)
                pooling_img = gr.Image(label="What SPP (1x1, 2x2, 4x4 bins) and ASPP (taps at rate x output stride, around the clicked pixel) pool", interactive=False, format="webp", height=400, buttons=["fullscreen"])
                with gr.Accordion("Every layer (table)", open=False):
                    rf_table = gr.DataFrame(interactive=False, max_height=420)

            with gr.Tab("Losses and IoU", id="losses") as losses_tab:
                gr.Markdown(text.LOSSES, latex_delimiters=LATEX)
                weights_btn = gr.Button("Count the pixels of each class", variant="primary", interactive=bool(sets))
                weights_md = gr.Markdown()
                with gr.Row():
                    weights_table = gr.DataFrame(label="Class pixel counts and weights", interactive=False, min_width=300)
                    weights_plot = gr.Plot(label="Share of pixels and class weight", show_label=False, min_width=320)
                gamma_sl = gr.Slider(0.0, 5.0, value=2.0, step=0.1, label="Focal loss gamma")
                loss_plot = gr.Plot(figures.loss_curves_figure(2.0), label="Loss as a function of p", show_label=False)
                with gr.Row():
                    iou_model = gr.Dropdown(arch_choices, value=archs[0] if archs else None, label="Model", min_width=180)
                    iou_class = gr.Dropdown(app.class_choices(set_name), value=app.default_iou_class(set_name), label="Class", min_width=180)
                    iou_btn = gr.Button("Show TP / FP / FN", variant="primary", interactive=bool(sets), min_width=160)
                with gr.Row(equal_height=True):
                    iou_img = gr.Image(label="IoU map: TP green, FP red, FN blue", interactive=False, format="webp", height=320, min_width=260, buttons=["fullscreen"], elem_classes="seg-img")
                    iou_md = gr.Markdown()

            with gr.Tab("Semantic vs instance", id="instances") as instances_tab:
                gr.Markdown(text.INSTANCES, latex_delimiters=LATEX)
                with gr.Row():
                    inst_model = gr.Dropdown(arch_choices, value=archs[0] if archs else None, label="Model (for images without instance ground truth)", min_width=200)
                    inst_class = gr.Dropdown(app.class_choices(set_name, with_all=True), value=app.default_instance_class(set_name), label="Class to split into connected components", min_width=200)
                    inst_btn = gr.Button("Colour by class and by instance", variant="primary", interactive=bool(sets), min_width=160)
                with gr.Row(equal_height=True):
                    class_img = gr.Image(label="By class (semantic)", interactive=False, format="webp", height=320, min_width=240, buttons=["fullscreen"], elem_classes="seg-img")
                    inst_img = gr.Image(label="By instance", interactive=False, format="webp", height=320, min_width=240, buttons=["fullscreen"], elem_classes="seg-img")
                inst_md = gr.Markdown()

        # ------------------------------------------------------------------ events
        source = [example_dd, image_file, mask_file, set_radio]
        light = dict(api_visibility="private", concurrency_limit=config.light_concurrency, concurrency_id=LIGHT)
        heavy = dict(concurrency_limit=None, concurrency_id=MODELS)  # they wait for their turn in app.scheduler, not in Gradio's queue

        def on_device(fn):
            return serving.on_device(fn, app.scheduler, config.trust_forwarded)

        preview = dict(fn=app.preview, inputs=[*source, opacity_sl], outputs=[input_img, gt_img, legend, click_img, source_md], show_progress="minimal", **light)

        gallery.select(app.pick_example, set_radio, [example_dd, image_file, mask_file], show_progress="hidden", api_name="pick_example", **light)
        example_dd.input(lambda: (None, None), None, [image_file, mask_file], show_progress="hidden", api_name="clear_uploads", **light)
        for trigger, name in ((example_dd.change, "preview"), (image_file.change, "preview_upload"), (mask_file.change, "preview_mask")):
            trigger(**preview, api_name=name)
        set_radio.change(
            app.set_changed, [set_radio, example_dd], [models_cb, example_dd, depth_sl, iou_model, iou_class, inst_model, inst_class, legend, gallery], show_progress="hidden", api_name="set_changed", **light
        ).then(**preview, api_name="preview_set")
        demo.load(**preview, api_name="preview_load")

        run_btn.click(
            on_device(app.compare),
            [*source, models_cb, depth_sl, opacity_sl, session],
            [status_md, legend, input_img, gt_img, *model_imgs, table, scatter, bars, session],
            api_name="compare",
            api_visibility="public",
            scroll_to_output=False,
            **heavy,
        )
        opacity_sl.release(app.restyle, [*source, opacity_sl, session], [gt_img, *model_imgs], show_progress="hidden", api_name="restyle", **light)
        # Opening a tab fills it for the current image; its button recomputes after a change.
        pruning = dict(fn=on_device(app.pruning), inputs=[*source, opacity_sl], outputs=[prune_md, *prune_imgs, prune_table, prune_plot], api_visibility="private", **heavy)
        receptive = dict(fn=on_device(app.receptive_fields), inputs=[set_radio, models_cb, depth_sl], outputs=[rf_plot, rf_table, dilation_plot, rf_md], api_visibility="private", **heavy)
        weights = dict(fn=app.class_weights, inputs=[*source, session], outputs=[weights_table, weights_plot, weights_md], **light)
        iou = dict(fn=on_device(app.iou_map), inputs=[*source, iou_model, iou_class, depth_sl, session], outputs=[iou_img, iou_md, session], api_visibility="private", **heavy)
        instances = dict(fn=on_device(app.instances), inputs=[*source, inst_model, inst_class, depth_sl, session], outputs=[class_img, inst_img, inst_md, session], api_visibility="private", **heavy)
        events = ((prune_btn.click, pruning, "pruning"), (pruning_tab.select, pruning, "pruning_tab"), (rf_btn.click, receptive, "receptive_fields"),
                  (receptive_tab.select, receptive, "receptive_tab"), (weights_btn.click, weights, "class_weights"), (iou_btn.click, iou, "iou_map"),
                  (inst_btn.click, instances, "instances"), (instances_tab.select, instances, "instances_tab"))
        for trigger, event, name in events:
            trigger(**event, api_name=name)
        losses_tab.select(**weights, api_name="losses_tab").then(**iou, api_name="losses_tab_iou")
        click_img.select(on_device(app.effective_fields), [*source, models_cb, depth_sl], [*erf_imgs, pooling_img, erf_md], api_visibility="private", api_name="effective_fields", **heavy)
        gamma_sl.change(app.loss_curves, gamma_sl, loss_plot, show_progress="hidden", api_name="loss_curves", **light)

        demo.unload(app.session_ended)

    demo.queue(max_size=config.queue_max_size, default_concurrency_limit=config.light_concurrency, api_open=False)
    return demo


__all__ = ["build_demo", "launch_kwargs"]
