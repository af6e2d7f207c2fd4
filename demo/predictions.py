"""One model's prediction on a request's image, kept in the browser tab's session so a
second look at it runs nothing (:class:`Predictions`)."""

from __future__ import annotations

import numpy as np

from .engine import Engine
from .failures import ModelUnavailable
from .session import CurrentImage, PredictionKey, SessionCache


class Predictions:
    """Runs a model on the engine unless the session already has its prediction."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def predict(self, current: CurrentImage, arch: str, depth: int | None, session: SessionCache) -> np.ndarray:
        """One model's prediction on the image, from the session when it already ran there."""
        key = PredictionKey(arch, self.engine.depth_for(current.set_name, arch, depth))
        cached = session.predictions_for(current).get(key)
        if cached is not None:
            return cached
        run = next(self.engine.run_models(current.set_name, [arch], current.image, depth))
        if not run.ok:
            raise ModelUnavailable(run.error)
        session.remember(current, key, run.labels)
        return run.labels


__all__ = ["Predictions"]

