"""Semantic vs instance: one image's semantic mask, the connected components of that mask, the
instances an instance model predicts (Panoptic-DeepLab, :mod:`segmodels.panoptic`, for a set
that ships one) and the ground-truth instances where the image has them, side by side."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from segmodels import ARCH_NAMES, zoo
from segmodels.data import DatasetInfo
from segmodels.panoptic import (
    connected_components,
    instance_models,
    load_panoptic,
    load_panoptic_card,
    predict_panoptic,
)

from .. import pictures, text
from ..context import Shared
from ..contract import Job, clear_outdated
from ..core import App
from ..errors import shown_inline
from ..failures import ModelUnavailable
from ..session import CurrentImage, Request, SessionCache, session_of
from ..view import View, hidden

ALL_CLASSES = "all classes"
PANELS = ("classes", "components", "predicted", "truth")
VIEW = View(*PANELS, "note", "session")
CHOICES = View("model", "class_name", "touching")
PICK = View("example", "image_file", "mask_file")
CLEARED = View(*PANELS, "note")
CENTRE_MARK = (255, 255, 255)


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 region``, ``2 regions``, ``0 objects``."""
    return f"{count} {word if count == 1 else words or word + 's'}"


@dataclass
class InstanceModel:
    """A set's shipped instance model: its name, the classes it groups into objects, and its
    card's panoptic quality on the validation set, with and without its grouping."""

    name: str
    thing_classes: list[int]
    pq: float | None
    pq_components: float | None
    command: str | None


@dataclass
class Instances:
    """One image's pixels by class, by connected component, by predicted instance and by
    ground-truth instance."""

    image: CurrentImage
    labels: np.ndarray  # H x W class ids: the instance model's semantic mask, or a semantic model's
    source: str  # which model made ``labels``
    components: np.ndarray  # H x W connected-component ids, 0 = none
    component_count: int
    predicted: np.ndarray | None  # H x W predicted instance ids (0 = none), None without an instance model
    predicted_count: int
    centres: np.ndarray  # K x 2 predicted centres (y, x)
    truth: np.ndarray | None  # H x W ground-truth instance ids, None without them
    truth_count: int
    note: str


def class_choices(info: DatasetInfo) -> list[str]:
    return [ALL_CLASSES, *info.class_names]


def default_class(info: DatasetInfo) -> str:
    return "Car" if "Car" in info.class_names else ALL_CLASSES


def instance_model(app: App, set_name: str) -> InstanceModel | None:
    """The first instance model shipped for a set whose card can be read, or None."""
    for name in instance_models(app.config.weights_dir, set_name):
        try:
            card = load_panoptic_card(set_name, name, app.config.weights_dir)
            evaluation = card.get("evaluation", {})
            return InstanceModel(name, list(card["thing_classes"]), evaluation.get("pq"), evaluation.get("connected_components", {}).get("pq"), evaluation.get("command"))
        except (zoo.WeightsError, OSError, ValueError, KeyError, TypeError):
            continue
    return None


def merges_touching(semantic: np.ndarray, instances: np.ndarray) -> bool:
    """Whether some connected component of a class holds two or more instances (objects of
    one class that touch)."""
    for category in np.unique(semantic[instances > 0]):
        regions, _ = connected_components(semantic, [int(category)])
        pairs = np.unique(np.stack([regions[instances > 0], instances[instances > 0]]), axis=1)
        pairs = pairs[:, pairs[0] > 0]
        if len(np.unique(pairs[0])) < pairs.shape[1]:
            return True
    return False


def touching_example(app: App, set_name: str | None) -> tuple[str, str] | None:
    """(key, label) of the set's first example in which objects of one class touch, or None."""
    for example in app.catalogue.examples_of(set_name):
        current = app.images.current(example.key, None, None, set_name)
        if current.instances is not None and merges_touching(current.gt, current.instances):
            return example.key, example.label
    return None


def touching_label(app: App, set_name: str | None) -> str | None:
    """The text of the button that shows the set's example with touching objects (None: no such example)."""
    found = touching_example(app, set_name) if set_name in app.choices.sets() else None
    return f"Show {found[1]}: touching objects" if found else None


def with_centres(colours: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``colours`` with a small cross on each predicted centre."""
    marked = colours.copy()
    for y, x in np.asarray(centres, dtype=int):
        marked[max(0, y - 3):y + 4, x] = CENTRE_MARK
        marked[y, max(0, x - 3):x + 4] = CENTRE_MARK
    return marked


class InstancesTab:
    """The semantic-vs-instance tab's handlers (typed results) and presenters (Gradio updates)."""

    def __init__(self, app: App):
        self.app = app
        self.colouring = Job("instances", self.computed, self.present, shown_inline(lambda message: VIEW(**{panel: hidden() for panel in PANELS}, note=message)),
                             lambda request: VIEW(note=request.session.stale_note(request.current)))

    def instances(self, current: CurrentImage, arch, class_name, depth, session: SessionCache) -> Instances:
        """With an instance model for the set: its semantic mask, the connected components of
        that mask and its predicted instances; otherwise ``arch``'s mask and its connected
        components. Components and instances are of ``class_name`` (all classes: every thing
        class, or every class without an instance model)."""
        model = instance_model(self.app, current.set_name)
        if class_name in (None, "", ALL_CLASSES):
            targets = model.thing_classes if model else list(range(current.info.num_classes))
        else:
            targets = [self.app.check.class_name(current.info, class_name)]
        truth, truth_count = None, 0
        if current.instances is not None:
            truth = np.where(np.isin(current.gt, targets), current.instances, 0)
            truth_count = len(np.unique(truth[truth > 0]))
        if model is None:
            arch = self.app.check.models(current.set_name, [arch] if arch else [])[0]
            labels = self.app.predictions.predict(current, arch, self.app.check.depth(depth), session)
            components, count = connected_components(labels, targets)
            result = Instances(current, labels, ARCH_NAMES[arch], components, count, None, 0, np.zeros((0, 2)), truth, truth_count, "")
        else:
            engine = self.app.engine
            with engine.benchmarker.busy(), engine.guard():
                try:
                    network = load_panoptic(current.set_name, model.name, engine.device, self.app.config.weights_dir)
                except (zoo.WeightsError, OSError, RuntimeError, ValueError) as error:
                    raise ModelUnavailable(f"The instance model of this set is unavailable: {error}") from error
                prediction = predict_panoptic(network, current.image, model.thing_classes)
            labels = prediction.semantic
            components, count = connected_components(labels, targets)
            kept = np.isin(prediction.semantic, targets) & (prediction.instances > 0)
            predicted = np.where(kept, prediction.instances, 0)
            centres = prediction.centres[np.isin(np.arange(1, len(prediction.centres) + 1), np.unique(predicted))]
            result = Instances(current, labels, "Panoptic-DeepLab", components, count, predicted, len(centres), centres, truth, truth_count, "")
        result.note = self.describe(result, model, class_name)
        return result

    @staticmethod
    def describe(result: Instances, model: InstanceModel | None, class_name) -> str:
        """What the panels show, with counts in words that agree with them."""
        if class_name in (None, "", ALL_CLASSES):
            what = "every class" if model is None else "every object class"
        else:
            what = f"**{class_name}**"
            if model is not None and result.image.info.class_names.index(class_name) not in model.thing_classes:
                what += " (*stuff*: Panoptic-DeepLab groups only the countable *thing* classes into objects)"
        parts = [f"**{result.image.label}**, {what}. **Regions**, the connected components (scipy.ndimage.label) of {result.source}'s semantic mask: "
                 f"{plural(result.component_count, 'region')}."]
        if result.predicted is not None:
            parts.append(f"**Instances**, Panoptic-DeepLab's: {plural(result.predicted_count, 'object')}: each object pixel joins the predicted centre (white cross) "
                         "nearest to where its predicted offset points, so objects of one class that touch, one connected component, can still come out separate.")
            if model.pq is not None and model.pq_components is not None:
                parts.append(f"On Shapes val, panoptic quality (PQ) {model.pq:.3f} with this grouping against {model.pq_components:.3f} for the connected components "
                             f"of the same masks (`{model.command or 'python scripts/train_shapes_instance.py evaluate'}`).")
        else:
            parts.append("This set ships no instance model: a semantic model does not know where one object ends and the next begins, so touching objects "
                         "merge into one region and an occluded object can split in two.")
        if result.truth is not None:
            parts.append(f"**Ground truth**: {plural(result.truth_count, 'separate object')}.")
        return " ".join(parts)

    # ------------------------------------------------------------------ presenters

    def show(self, example, image_file, mask_file, set_name, arch, class_name, depth, session):
        def parse() -> Request:
            current = self.app.images.current(example, image_file, mask_file, set_name)
            return Request(current, session_of(session), choices={"arch": arch, "class_name": class_name, "depth": depth})

        return self.colouring.answer(parse)

    def computed(self, request: Request) -> Instances:
        return self.instances(request.current, request.choices["arch"], request.choices["class_name"], request.choices["depth"], request.session)

    def present(self, request: Request, result: Instances) -> tuple:
        def panel(picture: np.ndarray | None) -> dict:
            return gr.update(value=self.app.files.path(picture), visible=True) if picture is not None else hidden()

        predicted = None if result.predicted is None else with_centres(pictures.instance_colours(result.predicted), result.centres)
        truth = None if result.truth is None else pictures.instance_colours(result.truth)
        return VIEW(classes=panel(pictures.overlay(result.image.image, result.labels, result.image.info, 0.85)), components=panel(pictures.instance_colours(result.components)),
                    predicted=panel(predicted), truth=panel(truth), note=result.note, session=request.session)

    def choices(self, set_name):
        """A new model set: its models (hidden when an instance model makes the mask) and classes."""
        if set_name not in self.app.choices.sets():
            return CHOICES()
        archs = self.app.choices.model_choices(set_name)
        info = self.app.choices.info(set_name)
        return CHOICES(
            model=gr.update(choices=archs, value=archs[0][1] if archs else None, visible=instance_model(self.app, set_name) is None),
            class_name=gr.update(choices=class_choices(info), value=default_class(info)),
            touching=gr.update(value=touching_label(self.app, set_name) or "", visible=touching_label(self.app, set_name) is not None),
        )

    def pick_touching(self, set_name):
        """The example with touching objects becomes the page's image (uploads cleared)."""
        found = touching_example(self.app, set_name) if set_name in self.app.choices.sets() else None
        return PICK(example=found[0], image_file=None, mask_file=None) if found else PICK()

    @staticmethod
    def clear(identity, session):
        """A new image was picked: the results of another image go."""
        return clear_outdated("instances", identity, session, CLEARED, **{panel: hidden() for panel in PANELS}, note="Press the button (or open this tab again) for the new image.")


def build(shared: Shared) -> gr.Tab:
    """The semantic-vs-instance tab, its components and its events."""
    tab = InstancesTab(shared.app)
    set_name = shared.set_radio.value
    archs = shared.app.choices.model_choices(set_name)
    info = shared.app.choices.info(set_name)
    image_style = dict(interactive=False, format="png", height=260, min_width=150, visible=False, buttons=["fullscreen"], elem_classes="seg-img")
    with gr.Tab("Semantic vs instance", id="instances") as instances_tab:
        gr.Markdown(text.INSTANCES, latex_delimiters=text.LATEX)
        with gr.Row(elem_id="instances-controls"):
            model = gr.Dropdown(
                archs,
                value=archs[0][1] if archs else None,
                label="Semantic model (sets without an instance model)",
                min_width=200,
                visible=bool(set_name) and instance_model(shared.app, set_name) is None,
            )
            class_name = gr.Dropdown(class_choices(info), value=default_class(info), label="Class to split into regions and objects", min_width=200)
            show_btn = gr.Button("Colour by class, region and object", variant="primary", interactive=bool(shared.app.choices.sets()), min_width=160)
            touching = touching_label(shared.app, set_name)
            touching_btn = gr.Button(touching or "", visible=touching is not None, min_width=160)
        with gr.Row(equal_height=True):
            classes = gr.Image(label="Semantic", **image_style)
            components = gr.Image(label="Regions", **image_style)
            predicted = gr.Image(label="Instances", **image_style)
            truth = gr.Image(label="Ground truth", **image_style)
        note = gr.Markdown(label="Instances note", elem_id="instances-note")

    panels = dict(classes=classes, components=components, predicted=predicted, truth=truth)
    show = dict(
        fn=shared.on_device(tab.show),
        inputs=[*shared.image_inputs, model, class_name, shared.depth_sl, shared.session],
        outputs=VIEW.components(**panels, note=note, session=shared.session),
        show_progress_on=[note],
        **shared.heavy,
    )
    show_btn.click(**show, api_name="instances")
    instances_tab.select(**show, api_name="instances_tab")
    touching_btn.click(
        tab.pick_touching,
        shared.set_radio,
        PICK.components(example=shared.example_dd, image_file=shared.image_file, mask_file=shared.mask_file),
        show_progress="hidden",
        api_name="instances_touching",
        **shared.light,
    ).then(**show, api_name="instances_touching_show")
    shared.set_radio.change(
        tab.choices, shared.set_radio, CHOICES.components(model=model, class_name=class_name, touching=touching_btn), show_progress="hidden", api_name="instances_choices", **shared.light
    )
    shared.image_changed.change(tab.clear, [shared.image_changed, shared.session], CLEARED.components(**panels, note=note), show_progress="hidden", api_name="instances_clear", **shared.light)
    return instances_tab
