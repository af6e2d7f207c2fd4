"""Semantic vs instance: the same pixels coloured by class and by object, from the Shapes
ground truth's instance ids, or approximated by the connected components of a prediction."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np
from scipy import ndimage

from segmodels import ARCH_NAMES
from segmodels.data import DatasetInfo

from .. import figures, text
from ..context import Shared, View, hidden
from ..core import App, CurrentImage, SessionCache
from ..errors import inline_errors

ALL_CLASSES = "all classes"
VIEW = View("classes", "instances", "note", "session")
CHOICES = View("model", "class_name")
CLEARED = View("classes", "instances", "note")


@dataclass
class Instances:
    """One image's pixels by class and by instance (or connected component)."""

    image: CurrentImage
    labels: np.ndarray  # H x W class ids: the ground truth, or a model's prediction
    instances: np.ndarray  # H x W instance ids, 0 = none
    count: int
    from_truth: bool
    note: str


def class_choices(info: DatasetInfo) -> list[str]:
    return [ALL_CLASSES, *info.class_names]


def default_class(info: DatasetInfo) -> str:
    return "Car" if "Car" in info.class_names else ALL_CLASSES


def connected_components(labels: np.ndarray, targets: list[int]) -> tuple[np.ndarray, int]:
    """The 4-connected regions of each target class, numbered 1, 2, ... across classes."""
    components = np.zeros(labels.shape, dtype=np.int32)
    count = 0
    for target in targets:
        labelled, found = ndimage.label(labels == target)
        components[labelled > 0] = labelled[labelled > 0] + count
        count += found
    return components, count


class InstancesTab:
    """The semantic-vs-instance tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app

    def instances(self, current: CurrentImage, arch, class_name, depth, session: SessionCache) -> Instances:
        """Ground-truth instances when the image has them, else the connected components of
        ``class_name`` (or of every class) in ``arch``'s prediction."""
        if current.instances is not None:
            count = int(len(np.unique(current.instances[current.instances > 0])))
            note = (f"**Ground truth** of {current.label}: left, every pixel coloured by its *class*; right, by its *instance*: "
                    f"{count} separate objects, even where two of the same class touch or overlap.")
            return Instances(current, current.gt, current.instances, count, True, note)
        arch = self.app.check_models(current.set_name, [arch] if arch else [])[0]
        if class_name in (None, "", ALL_CLASSES):
            targets, what = list(range(current.info.num_classes)), "every predicted class"
        else:
            targets, what = [self.app.check_class(current.info, class_name)], f"the predicted class **{class_name}**"
        labels = self.app.predict(current, arch, self.app.check_depth(depth), session)
        components, count = connected_components(labels, targets)
        note = (f"**Not ground-truth instances:** these are the *connected components* (scipy.ndimage.label) of {what} in "
                f"{ARCH_NAMES[arch]}'s prediction on {current.label}: {count} regions. Touching objects merge into one region and an "
                "occluded object can split in two; a semantic model does not know where one object ends and the next begins.")
        return Instances(current, labels, components, count, False, note)

    # ------------------------------------------------------------------ presenters

    @inline_errors(lambda message: VIEW(classes=hidden(), instances=hidden(), note=message))
    def show(self, example, image_file, mask_file, set_name, arch, class_name, depth, session):
        session, current, result = self.app.on_current_image("instances", example, image_file, mask_file, set_name, session,
                                                             lambda current, session: self.instances(current, arch, class_name, depth, session))
        if result is None:
            return VIEW(note=session.stale_note(current))
        classes = figures.overlay(result.image.image, result.labels, result.image.info, 0.85)
        return VIEW(classes=gr.update(value=self.app.picture(classes), visible=True), instances=gr.update(value=self.app.picture(figures.instance_colours(result.instances)), visible=True),
                    note=result.note, session=session)

    def choices(self, set_name):
        """A new model set: its models and classes."""
        if set_name not in self.app.sets():
            return CHOICES()
        archs = self.app.model_choices(set_name)
        info = self.app.info(set_name)
        return CHOICES(model=gr.update(choices=archs, value=archs[0][1] if archs else None), class_name=gr.update(choices=class_choices(info), value=default_class(info)))

    @staticmethod
    def clear(identity, session):
        """A new image was picked: the results of another image go."""
        if isinstance(session, SessionCache) and not session.outdated("instances", identity):
            return CLEARED()
        return CLEARED(classes=hidden(), instances=hidden(), note="Press the button (or open this tab again) for the new image.")


def build(shared: Shared) -> gr.Tab:
    """The semantic-vs-instance tab, its components and its events."""
    tab = InstancesTab(shared.app)
    set_name = shared.set_radio.value
    archs = shared.app.model_choices(set_name)
    info = shared.app.info(set_name)
    image_style = dict(interactive=False, format="png", height=320, min_width=240, visible=False, buttons=["fullscreen"], elem_classes="seg-img")
    with gr.Tab("Semantic vs instance", id="instances") as instances_tab:
        gr.Markdown(text.INSTANCES, latex_delimiters=text.LATEX)
        with gr.Row(elem_id="instances-controls"):
            model = gr.Dropdown(archs, value=archs[0][1] if archs else None, label="Model (for images without instance ground truth)", min_width=200)
            class_name = gr.Dropdown(class_choices(info), value=default_class(info), label="Class to split into connected components", min_width=200)
            show_btn = gr.Button("Colour by class and by instance", variant="primary", interactive=bool(shared.app.sets()), min_width=160)
        with gr.Row(equal_height=True):
            classes = gr.Image(label="By class (semantic)", **image_style)
            instances = gr.Image(label="By instance", **image_style)
        note = gr.Markdown(label="Instances note", elem_id="instances-note")

    show = dict(fn=shared.on_device(tab.show), inputs=[*shared.image_inputs, model, class_name, shared.depth_sl, shared.session],
                outputs=VIEW.components(classes=classes, instances=instances, note=note, session=shared.session), show_progress_on=[note], **shared.heavy)
    show_btn.click(**show, api_name="instances")
    instances_tab.select(**show, api_name="instances_tab")
    shared.set_radio.change(tab.choices, shared.set_radio, CHOICES.components(model=model, class_name=class_name), show_progress="hidden", api_name="instances_choices", **shared.light)
    shared.image_changed.change(tab.clear, [shared.image_changed, shared.session], CLEARED.components(classes=classes, instances=instances, note=note), show_progress="hidden", api_name="instances_clear", **shared.light)
    return instances_tab
