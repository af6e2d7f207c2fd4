"""What every tab module gets from :mod:`demo.ui`: the shared controls, the server-wide
:class:`demo.core.App`, and the settings its events use (see ``build(shared)`` in
:mod:`demo.tabs`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import gradio as gr

from . import serving
from .core import App

log = logging.getLogger(__name__)

MODELS = "models"  # the one concurrency group of every event that runs a model
LIGHT = "light"  # cheap events: previews, redraws, curves


def zero_gpu(fn):
    """``fn`` as a Hugging Face ZeroGPU job (``spaces.GPU``) when ``SPACES_ZERO_GPU`` is set;
    optional, never required: elsewhere, or without a usable ``spaces`` package, ``fn`` itself."""
    if not os.environ.get("SPACES_ZERO_GPU"):
        return fn
    try:
        import spaces  # type: ignore

        return spaces.GPU(fn)
    except Exception:  # noqa: BLE001 - absent package or no GPU runtime
        log.warning("SPACES_ZERO_GPU is set but the 'spaces' package is unusable; running without it")
        return fn


@dataclass
class Shared:
    """The shared controls and services of the dashboard, handed to each tab's ``build``."""

    app: App
    set_radio: gr.Radio  # the model set ("camvid" / "shapes")
    example_dd: gr.Dropdown  # example key
    image_file: gr.File  # upload (filepath) or None
    mask_file: gr.File  # ground-truth mask upload or None
    models_cb: gr.CheckboxGroup  # chosen architectures (keys: unet, unetpp, unet3p, deeplabv3p)
    depth_sl: gr.Slider  # U-Net++ pruning depth, over App.choices.depth_range()
    opacity_sl: gr.Slider  # mask opacity 0..1
    session: gr.State  # this browser tab's demo.session.SessionCache
    current_md: gr.Markdown  # the "Current image" line under the controls
    image_changed: gr.State  # identity of the image the page shows ("" for none); its .change clears stale results
    light: dict = field(init=False)
    heavy: dict = field(init=False)

    def __post_init__(self) -> None:
        config = self.app.config
        self.light = dict(api_visibility="private", concurrency_limit=config.light_concurrency, concurrency_id=LIGHT)
        # Model events wait for their turn in app.scheduler, not in Gradio's queue.
        self.heavy = dict(api_visibility="private", concurrency_limit=None, concurrency_id=MODELS)

    @property
    def image_inputs(self) -> list:
        """The inputs that name the image of a request (for ``App.images.current``)."""
        return [self.example_dd, self.image_file, self.mask_file, self.set_radio]

    def on_device(self, fn):
        """``fn`` as a callback that waits for its client's fair turn on the device (and holds
        a GPU on Hugging Face ZeroGPU)."""
        return serving.on_device(zero_gpu(fn), self.app.scheduler, self.app.config.trust_forwarded, self.app.config.stream_handoff_s)


__all__ = ["LIGHT", "MODELS", "Shared", "zero_gpu"]
