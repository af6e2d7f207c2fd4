"""An incremental Server-Sent Events parser, for the event streams of Gradio's two HTTP
protocols (``scripts/loadlib.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class SSEEvent:
    event: str
    data: str


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG HTML, "event stream interpretation"): feed it
    text as it arrives; lines end with LF, CRLF or CR; ``data:`` lines of one event are joined with
    LF; a blank line dispatches the event (type ``message`` unless an ``event:`` line named it);
    lines starting with ``:`` are comments; one space after the colon is dropped."""

    _LINE_END = re.compile(r"\r\n|\n|\r")

    def __init__(self) -> None:
        self._pieces: list[str] = []  # the unfinished line, kept in pieces so a long line is copied once
        self._skip_lf = False  # the last text ended with CR: an LF opening the next one ends no line
        self._event = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[SSEEvent]:
        if not text:
            return []
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = text.endswith("\r")
        events: list[SSEEvent] = []
        position = 0
        for match in self._LINE_END.finditer(text):
            self._pieces.append(text[position: match.start()])
            line, self._pieces = "".join(self._pieces), []
            position = match.end()
            self._take_line(line, events)
        if position < len(text):
            self._pieces.append(text[position:])
        return events

    def _take_line(self, line: str, events: list[SSEEvent]) -> None:
        if line == "":
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._event, self._data = "", []
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
