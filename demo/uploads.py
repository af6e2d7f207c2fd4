"""Uploads on disk, bounded: what a refused, aborted or slow upload leaves is removed at once,
the files kept (uploads and Gradio's cached copies of shown images, all in Gradio's upload
folder) stay under a cap, oldest first, and a full disk or an unwritable folder gets a
message instead of a 500.

Gradio's upload route streams each file into a ``tmp*`` file in the root of its upload folder
and renames it into ``<sha256>/<name>`` once the whole request has arrived; when the request
fails before that (a 413, a client that went away), the ``tmp*`` file stays. Gradio's
``gr.File`` also leaves an empty ``tmp*`` file there for each file input of each event. Both
are orphans once no upload that could own them is in flight: :class:`UploadGuard` removes the
root's ``tmp*`` files whenever the last upload in flight ends, and :class:`UploadFolder`
removes those older than the longest an upload may take, every ``sweep_every_s``."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
from gradio import utils as gradio_utils
from starlette.requests import ClientDisconnect

from .serving import refuse

log = logging.getLogger(__name__)

INSUFFICIENT_STORAGE = 507


def own_upload_folder() -> Path | None:
    """Gradio's upload folder when it is this server's own (``app.py`` makes one per server and
    names it in ``SEGMODELS_OWN_UPLOAD_DIR``), else None: a folder other apps may share (Gradio's
    default ``/tmp/gradio``) is never swept."""
    folder = os.environ.get("GRADIO_TEMP_DIR")
    return Path(folder) if folder and folder == os.environ.get("SEGMODELS_OWN_UPLOAD_DIR") else None


class UploadFolder:
    """Gradio's upload folder (``folder()``, read each time: ``GRADIO_TEMP_DIR`` may change in
    tests; None when the folder is not this server's own: then nothing is swept), kept within ``cap_bytes`` (files in its sub-folders, least recently modified first:
    Gradio touches a cached copy each time it hands it out again) and free of orphaned
    ``tmp*`` files."""

    def __init__(self, folder: Callable[[], Path], cap_bytes: int, max_upload_s: float, sweep_every_s: float = 30.0):
        if cap_bytes < 1 or max_upload_s <= 0:
            raise ValueError(f"need cap_bytes >= 1 and max_upload_s > 0, got {cap_bytes}, {max_upload_s}")
        self.folder = folder
        self.cap_bytes = cap_bytes
        self.max_upload_s = max_upload_s
        self.sweep_every_s = sweep_every_s
        self.kept_estimate = 0  # bytes kept at the last sweep plus those accepted since
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    def remove_orphans(self, older_than_s: float = 0.0) -> int:
        """Delete the root's ``tmp*`` files last written more than ``older_than_s`` ago."""
        root, removed, now = self.folder(), 0, time.time()
        if root is None:
            return 0
        try:
            entries = list(os.scandir(root))
        except OSError:
            return 0
        for entry in entries:
            try:
                if entry.name.startswith("tmp") and entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime >= older_than_s:
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
        return removed

    def enforce_cap(self) -> int:
        """Delete the least recently modified kept files until they take at most ``cap_bytes``;
        returns the bytes kept."""
        with self._lock:
            root = self.folder()
            if root is None:
                return 0
            files = []
            for directory, _, names in os.walk(root):
                if Path(directory) == root:
                    continue
                for name in names:
                    try:
                        stat = os.stat(os.path.join(directory, name), follow_symlinks=False)
                    except OSError:
                        continue
                    files.append((stat.st_mtime, stat.st_size, os.path.join(directory, name)))
            kept = sum(size for _, size, _ in files)
            for _, size, path in sorted(files):
                if kept <= self.cap_bytes:
                    break
                try:
                    os.unlink(path)
                    kept -= size
                    parent = os.path.dirname(path)
                    if not os.listdir(parent):
                        os.rmdir(parent)
                except OSError:
                    continue
            self.kept_estimate = kept
            return kept

    def accepted(self, size: int) -> bool:
        """Count an accepted upload; True when the kept files may now be above the cap."""
        self.kept_estimate += size
        return self.kept_estimate > self.cap_bytes

    def sweep(self) -> None:
        self.remove_orphans(older_than_s=self.max_upload_s)
        self.enforce_cap()

    def start(self) -> None:
        """Sweep every ``sweep_every_s`` in a daemon thread (once)."""
        if self._sweeper is None:
            self._sweeper = threading.Thread(target=self._sweep_forever, name="upload-sweeper", daemon=True)
            self._sweeper.start()

    def _sweep_forever(self) -> None:
        while True:
            time.sleep(self.sweep_every_s)
            try:
                self.sweep()
            except Exception as error:  # noqa: BLE001 - a failed sweep is tried again next time
                log.warning("upload folder sweep failed: %s", error)


def writable(folder: Path, needed: int) -> str | None:
    """Why ``folder`` cannot take ``needed`` more bytes (None when it can)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
    except OSError as error:
        return f"the server cannot write its upload folder ({error.strerror or error})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the server's upload folder is not writable"
    if free < needed:
        return f"the server's disk is almost full ({free / 2**20:.0f} MB free)"
    return None


class UploadGuard:
    """ASGI middleware around ``POST <upload_path>`` (outside :class:`demo.serving.BodyLimit`):

    * refused with 507 and a message before Gradio writes anything when the upload folder
      cannot be written or its disk has less than ``reserve_bytes`` free beyond the largest
      upload (examples, which need no upload, keep that reserve for the images they show);
    * at most ``max_files`` files a request (counted from the multipart delimiters as the
      body arrives: 413 at the first file too many);
    * 408 when the client sends nothing for ``idle_timeout_s`` or takes longer than
      ``folder.max_upload_s`` in all;
    * an ``OSError`` while Gradio writes (disk full, folder removed) answered 507;
    * a request that did not succeed leaves nothing: after every upload the root's ``tmp*``
      files are removed when no other upload is in flight (else those older than the longest
      an upload may take);
    * an accepted upload that may take the kept files over the cap triggers a sweep."""

    def __init__(
        self, app, folder: UploadFolder, max_files: int = 2, max_bytes: int = 24 * 2**20, reserve_bytes: int = 256 * 2**20, idle_timeout_s: float = 30.0, upload_path: str = "/gradio_api/upload"
    ):
        self.app = app
        self.folder = folder
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.reserve_bytes = reserve_bytes
        self.idle_timeout_s = idle_timeout_s
        self.upload_path = upload_path
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith(self.upload_path):
            return await self.app(scope, receive, send)
        self.folder.start()
        problem = await anyio.to_thread.run_sync(writable, self.folder.folder() or Path(gradio_utils.get_upload_folder()), self.max_bytes + self.reserve_bytes)
        if problem is not None:
            log.warning("upload refused: %s", problem)
            return await refuse(send, INSUFFICIENT_STORAGE, f"Upload refused: {problem}. The examples still work; try your own image later.")
        headers = dict(scope.get("headers") or [])
        boundary = _boundary(headers.get(b"content-type", b""))
        delimiter = b"--" + boundary if boundary else None
        state = {"status": None, "refused": False, "delimiters": 0, "tail": b""}
        deadline = time.monotonic() + self.folder.max_upload_s

        async def answer(status: int, message: str) -> None:
            """Refuse now (the app's own answer is then dropped) and end the body."""
            refused_first = state["status"] is None
            state["refused"] = True
            if refused_first:
                state["status"] = status
                await refuse(send, status, message)

        async def guarded_receive():
            if state["refused"]:
                return {"type": "http.disconnect"}
            with anyio.move_on_after(max(0.0, min(self.idle_timeout_s, deadline - time.monotonic()))) as waited:
                message = await receive()
            if waited.cancelled_caught:
                await answer(408, f"Upload too slow: at most {self.idle_timeout_s:g} s without data and {self.folder.max_upload_s:g} s in all.")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request" and delimiter is not None:
                data = state["tail"] + message.get("body", b"")
                state["delimiters"] += data.count(delimiter)
                state["tail"] = data[-(len(delimiter) - 1) :]
                if state["delimiters"] > self.max_files + 1:
                    await answer(413, f"Too many files: at most {self.max_files} a request.")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message):
            if state["refused"]:
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, guarded_receive, tracking_send)
        except OSError as error:
            log.warning("upload failed: %s", error)
            await answer(INSUFFICIENT_STORAGE, "Upload failed: the server could not store the file (its disk is full or its upload folder is not writable). The examples still work.")
        except ClientDisconnect:
            log.info("upload abandoned by its client")
        except Exception:
            if not state["refused"]:
                raise
        finally:
            self.in_flight -= 1
            await anyio.to_thread.run_sync(self.folder.remove_orphans, 0.0 if self.in_flight == 0 else self.folder.max_upload_s)
            if state["status"] == 200 and self.folder.accepted(int(headers.get(b"content-length", b"0") or 0) if headers.get(b"content-length", b"").isdigit() else self.max_bytes):
                await anyio.to_thread.run_sync(self.folder.enforce_cap)


def _boundary(content_type: bytes) -> bytes | None:
    """The multipart boundary of a ``Content-Type`` header value."""
    for parameter in content_type.split(b";")[1:]:
        name, _, value = parameter.strip().partition(b"=")
        if name.strip().lower() == b"boundary" and value:
            return value.strip().strip(b'"')
    return None


__all__ = ["UploadFolder", "UploadGuard", "own_upload_folder", "writable"]
