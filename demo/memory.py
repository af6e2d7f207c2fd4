"""Handing freed memory back to the system (glibc): the server keeps freed activation buffers
in its heap while it is busy, so the next pass reuses them (``app.tune_malloc``), and returns
them when it falls quiet, so its resident memory does not keep what a busy minute needed."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)


def release_free_memory() -> bool:
    """``malloc_trim(0)``: give the free pages of every glibc arena back to the system. Returns
    whether anything was released; False where the C library has no ``malloc_trim``."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return False
    released = bool(trim(0))
    log.debug("free heap memory handed back to the system: %s", released)
    return released


__all__ = ["release_free_memory"]
