"""What a user sees when something fails: a message, never a traceback.

Callbacks raise :class:`InputError` for bad input. Every tab's :class:`demo.contract.Job`
turns a failure into a message: :func:`shown_inline` writes it into one of the event's own
outputs (a status line), where it stays readable beside what it is about; :func:`raise_for_user`
(for API endpoints, whose clients need an error) raises a :class:`gradio.Error` whose toast
stays on the page until it is closed (a toast that fades after a few seconds is easily
missed in a classroom)."""

from __future__ import annotations

import errno
import html
import logging
from collections.abc import Callable

import gradio as gr
import torch

from .failures import InputError, ModelUnavailable, OutOfMemory, is_out_of_memory, short

log = logging.getLogger(__name__)


DISK_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})


def user_message(error: BaseException) -> str:
    """The message a user sees for ``error``: its own text when it was meant for users,
    otherwise a generic sentence (the details go to the server log)."""
    if isinstance(error, gr.Error):
        return str(error.message)
    if isinstance(error, (InputError, ModelUnavailable, OutOfMemory)):
        return str(error)
    if isinstance(error, OSError) and error.errno in DISK_ERRORS:
        log.error("cannot write a file: %s", str(error)[:500])
        return ("The server cannot write the images it shows (its disk is full or its folder is not writable). "
                "Nothing is wrong with your input: tell the teacher, and try again in a few minutes.")
    if is_out_of_memory(error):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return "The device ran out of memory. Nothing was lost: try again with fewer models or a smaller image."
    log.error("callback failed: %s: %s", type(error).__name__, str(error)[:500])
    log.debug("traceback", exc_info=error)
    return f"Something went wrong ({type(error).__name__}). Try another image or fewer models; the details are in the server log."


def as_gradio_error(error: BaseException) -> gr.Error:
    """A :class:`gradio.Error` that stays on screen until the user closes it."""
    return gr.Error(user_message(error), duration=None, print_exception=False)


def raise_for_user(error: Exception):
    """Raise ``error`` again as a lasting :class:`gradio.Error` with the message meant for the user."""
    message = user_message(error)  # an unexpected failure is logged there, once
    if isinstance(error, (gr.Error, InputError, ModelUnavailable, OutOfMemory)):
        log.warning("request refused: %s", message)  # one line: a bad value is no server fault
    raise gr.Error(message, duration=None, print_exception=False) from None


def error_text(message: str) -> str:
    """A message for a Markdown output, styled as an error (class ``inline-error``)."""
    return f'<p class="inline-error">⚠ {html.escape(message, quote=False)}</p>'


def shown_inline(show: Callable[[str], tuple]) -> Callable[[Exception], tuple]:
    """A failure as ``show(error_text(message))``: the callback's outputs with the message in place."""
    return lambda error: show(error_text(user_message(error)))


__all__ = ["InputError", "as_gradio_error", "error_text", "raise_for_user", "short", "shown_inline", "user_message"]
