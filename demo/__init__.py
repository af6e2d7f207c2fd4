"""The Gradio dashboard around :mod:`segmodels` (the library itself never imports Gradio).

``build_demo(config)`` returns the app; ``python app.py`` launches it."""

import plotly.io as pio

# Every chart of the dashboard is drawn in plotly_white. As plotly's default template it is
# applied when a figure is serialised, without the validated copy that naming it in each
# figure's layout costs (the largest part of drawing Compare's two charts in a profile).
pio.templates.default = "plotly_white"

from .config import DemoConfig  # noqa: E402
from .ui import build_demo, launch_kwargs, serve  # noqa: E402 - after the template is set

__all__ = ["DemoConfig", "build_demo", "launch_kwargs", "serve"]
