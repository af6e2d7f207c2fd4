"""The image of a request, decoded once (:class:`RequestImages`): a click resolves its image,
with :meth:`RequestImages.current`, into a :class:`CurrentImage` that carries the image's
identity through every result: a result computed for another image than the one the page
shows is dropped, never shown. Also the examples' thumbnails and usual sizes."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from .catalogue import Catalogue
from .checks import Checks
from .choices import Choices
from .config import DemoConfig
from .failures import InputError, short
from .files import ImageFiles
from .session import CurrentImage
from .session_uploads import file_path
from .sources import Source, load_example, load_upload

log = logging.getLogger(__name__)

DECODED_KEPT = 32  # decoded images kept, so the events of one click decode their image once


class RequestImages:
    """Decodes the image of each request (kept for the other events of the same click) and
    the examples' thumbnails."""

    def __init__(self, config: DemoConfig, catalogue: Catalogue, choices: Choices, checks: Checks, files: ImageFiles):
        self.config = config
        self.catalogue = catalogue
        self.choices = choices
        self.checks = checks
        self.files = files
        self._decoded: OrderedDict[tuple, Source] = OrderedDict()
        self._decoded_lock = threading.Lock()
        self._thumbs: dict[str, str] = {}

    def current(self, example: Any, image_file: Any, mask_file: Any, set_name: Any) -> CurrentImage:
        """The request's image (the upload when there is one, else the example), decoded once
        and kept for the other events of the same click, with the set's ground truth."""
        set_name = self.checks.set_name(set_name) if self.choices.sets() or set_name is not None else self._set_of(example)
        source = self._source(example, file_path(image_file), file_path(mask_file), set_name)
        info = self.choices.info(set_name)
        notes = list(source.notes)
        gt = source.gt_for(set_name)
        if source.gt is not None and gt is None:
            notes.append(f"The ground truth of {source.label} uses the {source.gt_dataset} classes, not those of the {set_name} models: no mIoU on this image.")
        elif gt is None:
            notes.append("No ground truth for this image: scores on it need a mask (upload one with the image); the model cards' validation scores are shown instead.")
        return CurrentImage(source.key, source.label, source.image, gt, set_name, info, notes, source.instances if gt is not None else None)

    def _set_of(self, example: Any) -> str:
        chosen = self.catalogue.example(example)
        return chosen.dataset if chosen is not None else "shapes"

    def _source(self, example: Any, image_path: str | None, mask_path: str | None, set_name: str) -> Source:
        named = self.catalogue.example(example)
        if image_path:
            request = ("upload", image_path, mask_path, set_name if mask_path else None)  # a mask is read in the set's classes
        elif mask_path:
            raise InputError("A ground-truth mask was uploaded without its image: upload the image as well (or clear the mask).")
        elif not example:
            raise InputError("Pick an example or upload an image.")
        elif named is None:
            raise InputError(f"Unknown example {short(example)}; examples are {', '.join(e.key for e in self.catalogue.examples[:4])}, ...")
        else:
            request = ("example", named.key)
        with self._decoded_lock:
            if request in self._decoded:
                self._decoded.move_to_end(request)
                return self._decoded[request]
        if request[0] == "upload":
            source = load_upload(image_path, mask_path, set_name, self.config.max_side)
        else:
            source = load_example(named, self.config.max_side)
        with self._decoded_lock:
            self._decoded[request] = source
            while len(self._decoded) > DECODED_KEPT:
                self._decoded.popitem(last=False)
        return source

    def thumbnails(self, set_name: str | None) -> list[str]:
        """PNG files of the examples offered for a set, in the menu's order (no captions: on a
        thumbnail they hide the picture, and the menu names the choice)."""
        thumbs = []
        for example in self.choices.gallery_examples(set_name):
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
        for set_name in self.choices.sets():
            example = next(iter(self.catalogue.examples_of(set_name)), None)
            if example is not None:
                try:
                    sizes[set_name] = load_example(example, self.config.max_side).size
                except InputError as error:
                    log.warning("%s", error)
        return sizes


__all__ = ["DECODED_KEPT", "RequestImages"]
