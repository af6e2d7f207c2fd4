"""The images the dashboard shows, as WebP files written once each, atomically.

Gradio serves an image returned as an array by encoding it into a file named after its
content, and it rewrites that file every time the same picture is returned again: a browser
still downloading the first copy then gets fewer bytes than the ``Content-Length`` it was
promised (``ERR_CONTENT_LENGTH_MISMATCH``, a broken image). Forty students opening the same
example do exactly that. So every callback returns a file path from :class:`ImageFiles`
instead: the file is named after the picture's bytes, written under a temporary name and
renamed into place (readers see all of it or nothing), and never rewritten. The folder is
outside Gradio's upload folder, so Gradio copies each file into its cache (atomically, too)
and serves its copy for as long as ``delete_cache`` keeps it; ours can then go."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image


class ImageFiles:
    """Content-named WebP files (quality 90, fastest method: about 6 ms and 40 KB for a 360x480
    overlay, against PNG's 40 ms and 270 KB: what 40 phones download, and what the server sends,
    shrinks sevenfold; colours stay within a few levels) in ``folder`` (default: a folder of this process in the system's
    temporary folder, removed when the process exits; those of servers no longer running are
    removed when the next one starts); the ``keep`` most recently used are kept (Gradio copies
    each one into its own cache as soon as a callback returns it)."""

    def __init__(self, folder: Path | None = None, keep: int = 512):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.folder = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / f"segmodels-shown-{os.getpid()}"
        self.keep = keep
        self._recent: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()
        if folder is None:
            remove_stale_folders(self.folder.parent)
            atexit.register(shutil.rmtree, self.folder, True)

    def path(self, image: np.ndarray) -> str:
        """The path of a WebP file holding ``image`` (H x W or H x W x 3 uint8)."""
        array = np.ascontiguousarray(image, dtype=np.uint8)
        digest = hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()[:32]
        target = self.folder / f"{digest}.webp"
        with self._lock:
            if digest in self._recent and target.is_file():
                self._recent.move_to_end(digest)
                return str(target)
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=self.folder, prefix=f".{digest}.", suffix=".webp")
        try:
            with os.fdopen(handle, "wb") as stream:
                Image.fromarray(array).save(stream, format="WEBP", quality=90, method=0)
            os.replace(staging, target)
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
        with self._lock:
            self._recent[digest] = target
            self._recent.move_to_end(digest)
            while len(self._recent) > self.keep:
                _, old = self._recent.popitem(last=False)
                old.unlink(missing_ok=True)
        return str(target)


def remove_stale_folders(parent: Path, prefix: str = "segmodels-shown-") -> int:
    """Remove the ``<prefix><pid>`` folders in ``parent`` whose process no longer runs (a
    server that was killed could not remove its own)."""
    removed = 0
    for folder in parent.glob(f"{prefix}*"):
        pid = folder.name[len(prefix):]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        except OSError:
            continue
    return removed


__all__ = ["ImageFiles", "remove_stale_folders"]
