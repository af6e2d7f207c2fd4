"""The dashboard's exceptions, at the bottom of its layers (nothing of the dashboard is
imported here): bad input, a model that cannot be used, the device out of memory."""

from __future__ import annotations

from typing import Any

import torch


class InputError(ValueError):
    """A user input cannot be used; the message is meant for the user."""


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a huge argument is never echoed back."""
    if isinstance(value, str) and len(value) > limit:
        return f"{repr(value[:limit])[:-1]}…' ({len(value):,} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class ModelUnavailable(RuntimeError):
    """One model cannot be used (missing or corrupted weights, broken card); others still can."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory during a request; the message is meant for the user."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA out-of-memory, or the CPU allocator / Python running out of memory."""
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


__all__ = ["InputError", "ModelUnavailable", "OutOfMemory", "is_out_of_memory", "short"]
