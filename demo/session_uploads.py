"""The uploads of each browser tab, deleted when it closes (:class:`SessionUploads`), and the
path of a Gradio file value (:func:`file_path`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradio import utils as gradio_utils

from .serving import delete_uploads


def file_path(value: Any) -> str | None:
    """A Gradio file value (path string, FileData-like dict or object) as a path, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, Path)):
        return str(value)
    if isinstance(value, dict):
        return value.get("path") or value.get("name")
    return getattr(value, "path", None) or getattr(value, "name", None)


class SessionUploads:
    """Which uploads each browser session used."""

    def __init__(self) -> None:
        self._uploads: dict[str, set[str]] = {}

    def remember(self, session: str | None, *files: Any) -> None:
        """Note which uploads a browser session used, to delete them when it ends."""
        paths = {path for path in map(file_path, files) if path}
        if session is not None and paths:
            self._uploads.setdefault(session, set()).update(paths)

    def release(self, session: str | None) -> None:
        """Delete the uploads of a session that ended (those no other open tab uses)."""
        mine = self._uploads.pop(session, set())
        shared = set().union(*self._uploads.values()) if self._uploads else set()  # the same file uploaded by another tab has the same path
        delete_uploads(mine - shared, Path(gradio_utils.get_upload_folder()))


__all__ = ["SessionUploads", "file_path"]
