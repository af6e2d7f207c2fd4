"""The named outputs of an event (:class:`View`) and the update that empties one (:func:`hidden`)."""

from __future__ import annotations

import gradio as gr


class View:
    """The named outputs of an event: a callback returns ``view(name=value, ...)`` (a tuple in
    output order, ``gr.skip()`` for every name not given) instead of values matched to
    outputs by position."""

    def __init__(self, *names: str):
        self.names = names

    def __call__(self, **values) -> tuple:
        unknown = set(values) - set(self.names)
        if unknown:
            raise TypeError(f"not outputs of this view: {', '.join(sorted(unknown))}")
        return tuple(values.get(name, gr.skip()) for name in self.names)

    def components(self, **components) -> list:
        """The output components, in this view's order."""
        return [components[name] for name in self.names]

    def named(self, values: tuple) -> dict:
        """{name: value} of a callback's output tuple (for tests)."""
        return dict(zip(self.names, values, strict=True))


def hidden() -> dict:
    """A new update that empties and hides an output (Gradio consumes update dicts, so none is shared)."""
    return gr.update(value=None, visible=False)


__all__ = ["View", "hidden"]
