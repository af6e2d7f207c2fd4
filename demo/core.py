"""The dashboard's composition root (:class:`App`): it builds the server-wide parts every tab
shares and holds them, with no logic of its own.

Layers, each importing only those below it: :mod:`demo.failures` and :mod:`demo.config`; the
catalogue of model sets and examples (:mod:`demo.catalogue`); the engine that runs the models
(:mod:`demo.engine`); what the page offers (:mod:`demo.choices`); the checks of a request
(:mod:`demo.checks`); its decoded image (:mod:`demo.request_images`); the predictions kept
per session (:mod:`demo.predictions`); the uploads of each browser tab
(:mod:`demo.session_uploads`)."""

from __future__ import annotations

import gradio as gr

from .catalogue import Catalogue
from .checks import Checks
from .choices import Choices
from .config import DemoConfig
from .engine import Engine
from .files import ImageFiles
from .predictions import Predictions
from .request_images import RequestImages
from .scheduler import FairScheduler
from .session_uploads import SessionUploads


class App:
    """Shared by every session: the settings, the catalogue, the engine, the fair scheduler,
    the files of shown images, the choices offered, the checks of a request, its image, the
    predictions kept per session and the uploads of each browser tab."""

    def __init__(self, config: DemoConfig | None = None):
        self.config = config or DemoConfig()
        self.catalogue = Catalogue.for_config(self.config)
        self.engine = Engine(self.config, self.catalogue)
        self.scheduler = FairScheduler(self.config.jobs_per_address, self.config.jobs_total, self.config.max_wait_s, lanes=self.engine.lanes)
        self.files = ImageFiles()
        self.choices = Choices(self.engine)
        self.check = Checks(self.choices, self.config.weights_dir)
        self.images = RequestImages(self.config, self.catalogue, self.choices, self.check, self.files)
        self.predictions = Predictions(self.engine)
        self.uploads = SessionUploads()

    async def session_ended(self, request: gr.Request) -> None:
        """A browser tab closed: drop its waiting model jobs and delete its uploads (those no
        other open tab uses)."""
        session = getattr(request, "session_hash", None)
        self.scheduler.cancel_session(session)
        self.uploads.release(session)


__all__ = ["App"]
