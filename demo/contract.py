"""The one contract every tab follows.

A tab supplies ``parse`` (its raw inputs checked into one :class:`demo.session.Request`),
``compute(request) -> result`` (an iterator of results for a stream; plain data, no Gradio)
and ``present(request, result) -> outputs`` (Gradio updates). A :class:`Job` does the rest
in one place: the browser tab's session, starting the stale guard on the request's image
(a result for an image the page no longer shows is dropped, never shown), and turning every
failure into a message. :func:`clear_outdated` empties a tab's results when the page's image
changes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .session import Request, session_of
from .view import View

Failure = Callable[[Exception], tuple]  # the outputs of a failed event (or a raised gr.Error)


@dataclass
class Job:
    """One event of a tab: ``tab`` names its results in the session (None: results of no
    image, nothing to guard), ``failed`` turns an exception into outputs
    (:func:`demo.errors.shown_inline`) or a lasting toast (:func:`demo.errors.raise_for_user`),
    and ``stopped`` is shown instead of a result computed for an image the page left."""

    tab: str | None
    compute: Callable[[Request], Any]
    present: Callable[[Request, Any], tuple]
    failed: Failure
    stopped: Callable[[Request], tuple] | None = None

    def start(self, parse: Callable[[], Request]) -> Request:
        request = parse()
        if self.tab is not None and request.current is not None:
            request.watch = request.session.watch(request.current, self.tab)
        return request

    def answer(self, parse: Callable[[], Request]) -> tuple:
        """One result: parsed, computed, guarded and presented."""
        try:
            request = self.start(parse)
            result = self.compute(request)
            return self.stopped(request) if request.stale else self.present(request, result)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            return self.failed(error)

    def stream(self, parse: Callable[[], Request]) -> Iterator[tuple]:
        """Each result as soon as it is computed; the stream stops at the first one whose
        image the page no longer shows."""
        try:
            request = self.start(parse)
            for result in self.compute(request):
                if request.stale:
                    yield self.stopped(request)
                    return
                yield self.present(request, result)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            yield self.failed(error)

    async def astream(self, parse: Callable[[], Request]) -> AsyncIterator[tuple]:
        """:meth:`stream` for a ``compute`` that is an asynchronous iterator."""
        try:
            request = self.start(parse)
            async for result in self.compute(request):
                if request.stale:
                    yield self.stopped(request)
                    return
                yield self.present(request, result)
        except Exception as error:  # noqa: BLE001 - every failure becomes a message
            yield self.failed(error)


def no_image(session: Any = None, **choices: Any) -> Request:
    """The request of an event that uses no image."""
    return Request(None, session_of(session), choices=choices)


def outdated(tab: str, identity: str, session: Any) -> bool:
    """Whether ``tab`` shows results of another image than ``identity`` (see
    :meth:`demo.session.SessionCache.outdated`); a call without a session has none to keep."""
    return session_of(session).outdated(tab, identity)


def clear_outdated(tab: str, identity: str, session: Any, view: View, **cleared: Any) -> tuple:
    """``view`` with the ``cleared`` outputs when ``tab`` shows results of another image than
    ``identity``, else with nothing changed."""
    return view(**cleared) if outdated(tab, identity, session) else view()


__all__ = ["Failure", "Job", "clear_outdated", "no_image", "outdated"]
