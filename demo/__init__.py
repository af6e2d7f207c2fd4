"""The Gradio dashboard around :mod:`segmodels` (the library itself never imports Gradio).

``build_demo(config)`` returns the app; ``python app.py`` launches it."""

from .config import DemoConfig
from .ui import build_demo, launch_kwargs

__all__ = ["DemoConfig", "build_demo", "launch_kwargs"]
