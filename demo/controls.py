"""The controls every tab shares: model set, example (menu and thumbnails), upload, models,
depth and opacity, and the line under them that names the current image.

The preview is one event for every way the image can change, so a browser runs its
previews one after another and the last one always describes the last choice."""

from __future__ import annotations

import gradio as gr

from .catalogue import set_label
from .core import App
from .errors import error_text, user_message
from .session import session_of
from .sources import mask_rule
from .view import View

PREVIEW = View("current", "image_changed")
SET_CHANGED = View("models", "example", "gallery", "depth", "upload_help")
PICKED = View("example", "image_file", "mask_file")


def checked_by_callbacks(component: gr.components.Component) -> gr.components.Component:
    """``component`` (a radio or checkbox group) with Gradio's check of its value against its
    choices turned off: the callbacks check it (:meth:`demo.checks.Checks.set_name`,
    :meth:`demo.checks.Checks.models`) and say what is wrong, where Gradio's check refuses an
    API client's value with a traceback in the server log. An instance attribute, not a
    subclass: Gradio writes a ``.pyi`` file beside any module that subclasses a component."""
    component.preprocess = lambda payload: payload
    return component


def upload_help(set_name: str | None) -> str:
    """What the two upload boxes accept (under them: a long label would cover the drop area)."""
    return f"**Image:** PNG, JPEG, WebP, BMP, TIFF or GIF, at most 10 MB. **Mask:** {mask_rule(set_name or '')}."


class Controls:
    """Handlers of the shared controls."""

    def __init__(self, app: App):
        self.app = app

    def preview(self, example, image_file, mask_file, set_name, session, request: gr.Request = None):
        """Name the chosen image under the controls (or say why it cannot be used), and set
        its identity: a change of identity makes every tab drop its old results, and running
        jobs stop showing theirs. Works without any trained model (the examples are still shown)."""
        self.app.uploads.remember(getattr(request, "session_hash", None), image_file, mask_file)
        if not image_file and example not in {key for _, key in self.app.choices.example_choices(set_name)} and set_name in self.app.choices.sets():
            return PREVIEW()  # the set just changed: its own example is on the way
        session = session_of(session)
        started = session.version
        try:
            current = self.app.images.current(example, image_file, mask_file, set_name)
        except Exception as error:  # noqa: BLE001 - the message replaces the line
            session.show("")
            return PREVIEW(current=error_text(user_message(error)), image_changed="")
        if session.version != started and session.shown != current.identity:
            return PREVIEW()  # a run started on a newer choice meanwhile; that choice's preview follows
        session.show(current.identity)
        notes = "".join(f"\n\n<small>{note}</small>" for note in current.notes)
        return PREVIEW(current=current.summary() + notes, image_changed=current.identity)

    def set_changed(self, set_name, example):
        """A new model set: its models, its examples, the depth slider if a model can be pruned,
        and what its masks may contain."""
        if set_name not in self.app.choices.sets():
            return SET_CHANGED()
        offered = [key for _, key in self.app.choices.example_choices(set_name)]
        if not self.app.catalogue.examples_of(set_name):
            gr.Info(f"No {set_label(set_name)} examples on this server: upload an image of that kind (the examples shown have no ground truth for these classes).")
        archs = [a for _, a in self.app.choices.model_choices(set_name)]
        chosen = example if example in offered else self.app.choices.default_example(set_name)
        return SET_CHANGED(
            models=gr.update(choices=self.app.choices.model_choices(set_name), value=archs),
            example=gr.update(choices=self.app.choices.example_choices(set_name), value=chosen),
            gallery=gr.update(value=self.app.images.thumbnails(set_name), selected_index=self.thumbnail_of(set_name, chosen)),
            depth=gr.update(visible=bool(self.app.choices.prunable(set_name, archs))),
            upload_help=upload_help(set_name),
        )

    def models_changed(self, set_name, models):
        """The depth slider is shown only while a chosen model can be pruned."""
        return gr.update(visible=bool(self.app.choices.prunable(set_name, models)))

    def thumbnail_of(self, set_name, example) -> int | None:
        """The position of ``example`` among the set's thumbnails (None: not among them)."""
        keys = [shown.key for shown in self.app.choices.gallery_examples(set_name)]
        return keys.index(example) if example in keys else None

    def highlight(self, set_name, example):
        """The thumbnail of the chosen example highlighted, whichever way it was chosen (a tap,
        the menu, a set change); none while an upload or an unknown example is the image."""
        return gr.update(selected_index=self.thumbnail_of(set_name, example))

    def pick_example(self, set_name, evt: gr.SelectData):
        """A tap on a thumbnail: choose that example and clear any upload."""
        shown = self.app.choices.gallery_examples(set_name)
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if not 0 <= index < len(shown):
            return PICKED()
        return PICKED(example=shown[index].key, image_file=None, mask_file=None)


__all__ = ["Controls", "upload_help"]
