"""The dashboard's server-wide state (:class:`App`), shared by every tab, with the types of
one request's image and one browser tab's state (:mod:`demo.session`).

A click resolves its image once, with :meth:`App.current_image`, into a
:class:`CurrentImage` that carries the image's identity through every result: a result
computed for another image than the one the page shows is dropped, never shown."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from gradio import utils as gradio_utils

from segmodels import ARCH_NAMES, ARCHITECTURES
from segmodels.data import DatasetInfo

from .catalogue import DATASETS, set_label
from .config import DemoConfig
from .engine import Engine
from .failures import InputError, ModelUnavailable, short
from .files import ImageFiles
from .scheduler import FairScheduler
from .serving import delete_uploads
from .session import CurrentImage, PredictionKey, SessionCache
from .sources import Example, Source, camvid_examples, load_example, load_upload, shapes_examples

log = logging.getLogger(__name__)

ARCH_ORDER = tuple(ARCHITECTURES)
DECODED_KEPT = 32  # decoded images kept, so the events of one click decode their image once


def _number_in(value: Any, default: float, low: float, high: float, what: str) -> float:
    """``value`` as a number from ``low`` to ``high`` (``default`` for None); NaN is refused."""
    try:
        number = float(default if value is None else value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number from {low:g} to {high:g}, got {short(value)}.") from None
    if not low <= number <= high:
        raise InputError(f"{what} must be from {low:g} to {high:g}, got {short(value)}.")
    return number


def file_path(value: Any) -> str | None:
    """A Gradio file value (path string, FileData-like dict or object) as a path, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


class App:
    """Shared by every session: the engine, the fair scheduler, the examples, the choices
    offered, input validation and the image of a request."""

    def __init__(self, config: DemoConfig | None = None):
        self.config = config or DemoConfig()
        self.engine = Engine(self.config)
        self.scheduler = FairScheduler(self.config.jobs_per_address, self.config.jobs_total, self.config.max_wait_s)
        self.files = ImageFiles()
        camvid, self.camvid_problem = camvid_examples(self.config.camvid_dir, self.config.num_camvid_examples)
        self.examples: list[Example] = camvid + shapes_examples(self.config.shapes_seed, self.config.num_shapes_examples, self.config.shapes_size)
        self._by_name = {e.key: e for e in self.examples} | {e.label: e for e in self.examples}
        self._decoded: OrderedDict[tuple, Source] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self._thumbs: dict[str, str] = {}
        self._uploads: dict[str, set[str]] = {}

    # ------------------------------------------------------------------ choices

    def sets(self) -> list[str]:
        return list(self.engine.catalogue())

    def set_choices(self) -> list[tuple[str, str]]:
        return [(set_label(s), s) for s in self.sets()]

    def default_set(self) -> str | None:
        """The first set whose own examples are available (so the first view has ground
        truth), else the first set."""
        sets = self.sets()
        with_examples = [s for s in sets if self.examples_of(s)]
        return (with_examples or sets or [None])[0]

    def archs(self, set_name: str | None) -> list[str]:
        return self.engine.catalogue().get(set_name, []) if set_name else []

    def model_choices(self, set_name: str | None) -> list[tuple[str, str]]:
        return [(ARCH_NAMES[a], a) for a in self.archs(set_name)]

    def pruning_depths(self, set_name: str | None, arch: str) -> tuple[int, ...]:
        """The depths the shipped model can be pruned to (empty when it cannot be, or is broken)."""
        try:
            return self.engine.pruning_depths(set_name, arch) if set_name else ()
        except ModelUnavailable:
            return ()

    def prunable(self, set_name: str | None, archs: list[str] | None) -> list[str]:
        """The architectures among ``archs`` whose shipped model can be pruned."""
        return [a for a in archs or [] if a in self.archs(set_name) and self.pruning_depths(set_name, a)]

    def examples_of(self, set_name: str | None) -> list[Example]:
        """The examples from the dataset that ``set_name``'s models were trained on."""
        return [e for e in self.examples if e.dataset == set_name]

    def gallery_examples(self, set_name: str | None) -> list[Example]:
        """The examples offered for a set: its own (all of them when it has none)."""
        return self.examples_of(set_name) or list(self.examples)

    def example_choices(self, set_name: str | None) -> list[tuple[str, str]]:
        return [(e.label, e.key) for e in self.gallery_examples(set_name)]

    def default_example(self, set_name: str | None) -> str | None:
        chosen = self.gallery_examples(set_name)
        return chosen[0].key if chosen else None

    def info(self, set_name: str | None) -> DatasetInfo:
        if set_name in self.sets():
            return self.engine.dataset_info(set_name)
        return DATASETS.get(set_name or "", DATASETS["shapes"])

    def thumbnails(self, set_name: str | None) -> list[str]:
        """PNG files of the examples offered for a set, in the menu's order (no captions: on a
        thumbnail they hide the picture, and the menu names the choice)."""
        thumbs = []
        for example in self.gallery_examples(set_name):
            if example.key not in self._thumbs:
                try:
                    self._thumbs[example.key] = self.files.path(load_example(example, 160).image)
                except InputError as error:
                    log.warning("%s", error)
                    continue
            thumbs.append(self._thumbs[example.key])
        return thumbs

    def usual_sizes(self) -> dict[str, tuple[int, int]]:
        """{set: the size of its first example}: what most requests will run at."""
        sizes = {}
        for set_name in self.sets():
            example = next(iter(self.examples_of(set_name)), None)
            if example is not None:
                try:
                    sizes[set_name] = load_example(example, self.config.max_side).size
                except InputError as error:
                    log.warning("%s", error)
        return sizes

    # ------------------------------------------------------------------ validation

    def check_set(self, set_name: Any) -> str:
        sets = self.sets()
        if not sets:
            raise InputError(f"No trained models are installed (looked in {self.config.weights_dir}). Export weights there or set SEGMODELS_WEIGHTS.")
        if set_name not in sets:
            labels = {set_label(s): s for s in sets}
            if set_name in labels:
                return labels[set_name]
            raise InputError(f"Unknown model set {short(set_name)}; available: {', '.join(sets)}.")
        return set_name

    def check_models(self, set_name: str, models: Any) -> list[str]:
        """Known, shipped architectures (by key or display name), deduplicated, in display
        order; a list longer than the architectures that exist is refused before any lookup."""
        if isinstance(models, str):
            models = [models]
        if not models:
            raise InputError("Choose at least one model to run.")
        if not isinstance(models, (list, tuple)) or not all(isinstance(m, str) for m in models):
            raise InputError(f"Models must be a list of names such as {', '.join(ARCH_NAMES)}.")
        unique = list(dict.fromkeys(models))
        if len(unique) > len(ARCH_NAMES):
            raise InputError(f"At most {len(ARCH_NAMES)} different models can run ({', '.join(ARCH_NAMES)}); got {len(unique)} names.")
        names = {v: k for k, v in ARCH_NAMES.items()}
        shipped = self.archs(set_name)
        archs = []
        for model in unique:
            arch = names.get(model, model)
            if arch not in ARCH_NAMES:
                raise InputError(f"Unknown model {short(model)}; choose from {', '.join(ARCH_NAMES.values())}.")
            if arch not in shipped:
                raise InputError(f"The {set_label(set_name)} set ships no {ARCH_NAMES[arch]} weights.")
            if arch not in archs:
                archs.append(arch)
        return sorted(archs, key=ARCH_ORDER.index)

    def depth_range(self) -> tuple[int, int]:
        """(shallowest, deepest) depth the shipped models can be pruned to, from their cards
        ((1, 1) when none can be: the depth then changes nothing)."""
        return self.engine.model_sets.depth_range() or (1, 1)

    def check_depth(self, depth: Any) -> int:
        """The U-Net++ depth (the deepest when None), within the depths the shipped models
        declare (any from 1 when none can be pruned: the depth then changes nothing)."""
        declared = self.engine.model_sets.depth_range()
        low, high = declared or (1, math.inf)
        return int(round(_number_in(depth, high if declared else low, low, high, "The U-Net++ depth")))

    @staticmethod
    def check_opacity(opacity: Any) -> float:
        return _number_in(opacity, 0.8, 0.0, 1.0, "The mask opacity")

    def check_class(self, info: DatasetInfo, class_name: Any) -> int:
        if class_name not in info.class_names:
            raise InputError(f"Unknown class {short(class_name)}; the classes are {', '.join(info.class_names)}.")
        return info.class_names.index(class_name)

    # ------------------------------------------------------------------ the image of a request

    def current_image(self, example: Any, image_file: Any, mask_file: Any, set_name: Any) -> CurrentImage:
        """The request's image (the upload when there is one, else the example), decoded once
        and kept for the other events of the same click, with the set's ground truth."""
        set_name = self.check_set(set_name) if self.sets() or set_name is not None else self._set_of(example)
        source = self._source(example, file_path(image_file), file_path(mask_file), set_name)
        info = self.info(set_name)
        notes = list(source.notes)
        gt = source.gt_for(set_name)
        if source.gt is not None and gt is None:
            notes.append(f"The ground truth of {source.label} uses the {source.gt_dataset} classes, not those of the {set_name} models: no mIoU on this image.")
        elif gt is None:
            notes.append("No ground truth for this image: scores on it need a mask (upload one with the image); the model cards' validation scores are shown instead.")
        return CurrentImage(source.key, source.label, source.image, gt, set_name, info, notes, source.instances if gt is not None else None)

    def _set_of(self, example: Any) -> str:
        chosen = self._by_name.get(example) if isinstance(example, str) else None
        return chosen.dataset if chosen is not None else "shapes"

    def _source(self, example: Any, image_path: str | None, mask_path: str | None, set_name: str) -> Source:
        if image_path:
            request = ("upload", image_path, mask_path, set_name if mask_path else None)  # a mask is read in the set's classes
        elif mask_path:
            raise InputError("A ground-truth mask was uploaded without its image: upload the image as well (or clear the mask).")
        elif not example:
            raise InputError("Pick an example or upload an image.")
        elif not isinstance(example, str) or example not in self._by_name:
            raise InputError(f"Unknown example {short(example)}; examples are {', '.join(e.key for e in self.examples[:4])}, ...")
        else:
            request = ("example", self._by_name[example].key)
        with self._decoded_lock:
            if request in self._decoded:
                self._decoded.move_to_end(request)
                return self._decoded[request]
        if request[0] == "upload":
            source = load_upload(image_path, mask_path, set_name, self.config.max_side)
        else:
            source = load_example(self._by_name[example], self.config.max_side)
        with self._decoded_lock:
            self._decoded[request] = source
            while len(self._decoded) > DECODED_KEPT:
                self._decoded.popitem(last=False)
        return source

    def picture(self, image: np.ndarray) -> str:
        """A file for an image output (see :mod:`demo.files`)."""
        return self.files.path(image)

    # ------------------------------------------------------------------ predictions kept per session

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

    # ------------------------------------------------------------------ uploads of a session

    def remember_uploads(self, session: str | None, *files: Any) -> None:
        """Note which uploads a browser session used, to delete them when it ends."""
        paths = {path for path in map(file_path, files) if path}
        if session is not None and paths:
            self._uploads.setdefault(session, set()).update(paths)

    async def session_ended(self, request: gr.Request) -> None:
        """A browser tab closed: drop its waiting model jobs and delete its uploads (those no
        other open tab uses)."""
        session = getattr(request, "session_hash", None)
        self.scheduler.cancel_session(session)
        mine = self._uploads.pop(session, set())
        shared = set().union(*self._uploads.values()) if self._uploads else set()  # the same file uploaded by another tab has the same path
        delete_uploads(mine - shared, Path(gradio_utils.get_upload_folder()))


__all__ = ["ARCH_ORDER", "App", "CurrentImage", "PredictionKey", "SessionCache", "file_path"]
