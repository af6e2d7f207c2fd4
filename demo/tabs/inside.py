"""The "Inside the network" tab (issue 13): the real graph of the chosen model, every node
drawn with its feature map on the current image (:mod:`segmodels.teach.look_inside`), lit or grey
by the U-Net++ pruning depth, and one node's shape, channels, parameters, FLOPs and
receptive field on demand.

``look`` and the presenters (``node_markdown``, ``node_image``, ``summary_markdown``; the graph
is drawn by :mod:`demo.inside_graph`) are plain functions, tested without a browser;
:class:`Inside` holds the handlers and ``build`` wires them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
import numpy as np

from segmodels import ARCH_NAMES, zoo
from segmodels.teach.look_inside import NetworkView, look_inside
from segmodels.teach.network_graph import SeparableConvInfo

from .. import explanations
from ..contract import Job, clear_outdated, no_image
from ..errors import InputError, raise_for_user
from ..inside_graph import count_text, depth_name, field_text, graph_figure, node_picture
from ..session import Request, session_of
from ..view import View

if TYPE_CHECKING:
    from ..context import Shared
    from ..core import App

MODES = {"Mean |activation|": "activation", "PCA colour (3 components as RGB)": "pca"}
VIEW = View("state", "summary", "graph", "node", "node_md", "node_img")
RELIT = View("state", "summary", "graph", "node_md", "node_img")
MODE = View("graph", "node_img")
NODE = View("graph", "node_md", "node_img")
DETAIL_WIDTH = 384  # the selected node's map is enlarged (nearest) to about this width

INTRO = """Every box is a feature map the network really computes on the image above, taken
with hooks from **one forward pass**: encoder stages X(i,0), decoder nodes, the heads.
Lines are the connections that feed each node. *Mean |activation|* shows where a node
responds; *PCA colour* shows its first three principal components as red, green and blue
(pixels of the same colour have similar feature vectors). With **U-Net++**, the depth slider
relights the grid: at depth d only the nodes X(i,j) with i + j <= d run; the grey ones are
pruned away. Pick a node below for its shape, parameters, FLOPs and receptive field (on a
small screen, zoom into the graph or use the list)."""


@dataclass(frozen=True)
class InsideResult:
    """One "Look inside" request: the view and what it was computed for."""

    view: NetworkView
    set_name: str
    arch: str
    image_label: str


def parse_look(app: App, example, image_file, mask_file, set_name, arch, depth, mode, session) -> Request:
    """Check the request and decode its image once."""
    set_name = app.check.set_name(set_name)
    archs = app.choices.archs(set_name)
    if arch not in archs:
        allowed = ", ".join(f"{ARCH_NAMES.get(a, a)} ({a})" for a in archs) or "none"
        raise InputError(f"Choose one of the architectures of this model set: {allowed}; got {str(arch)[:60]!r}.")
    depth = app.check.depth(depth)
    return Request(app.images.current(example, image_file, mask_file, set_name), session_of(session), [arch], depth, choices={"mode": mode})


def look(app: App, request: Request) -> InsideResult:
    """Run the chosen model with hooks on the request's image.

    The model is the shipped one as trained (batch norms not folded), so that every
    parameter the paper counts belongs to a node."""
    current, (arch,) = request.current, request.archs
    engine = app.engine
    with engine.benchmarker.busy(), engine.guard():
        engine.model(current.set_name, arch)  # a clear message when its files cannot be used
        model = zoo.load_model(f"{current.set_name}/{arch}", engine.device, app.config.weights_dir)
        depths = model.pruning_depths
        view = look_inside(model, current.image, depth=min(request.depth, max(depths)) if depths else None)
    return InsideResult(view, current.set_name, arch, current.label)


# ---------------------------------------------------------------------------- presenters


def default_node(view: NetworkView) -> str:
    """The node first shown in detail: the head that runs (the model's output)."""
    heads = [node for node in view.nodes if node.info.kind == "head" and node.runs]
    return (heads[0] if heads else view.nodes[-1]).info.name


def node_choices(view: NetworkView) -> list[tuple[str, str]]:
    """(label, name) of every node, along the data flow."""
    ordered = sorted(view.nodes, key=lambda node: (node.info.column, node.info.row))
    return [(f"{node.info.label} ({node.info.kind})", node.info.name) for node in ordered]


def _first_depth(view: NetworkView, name: str) -> int | None:
    return next((depth for depth in view.pruning_depths if name in view.running[depth]), None)


def node_markdown(view: NetworkView, name: str) -> str:
    """The selected node: what it computes, its output, parameters, FLOPs, receptive field,
    whether it runs, and the links into it."""
    node = view.node(name)
    info = node.info
    height, width = view.image_size
    rows = [f"### {info.label}", f"*{info.kind}*: {info.detail}", "", "| | |", "|---|---|"]
    if node.feature is not None:
        channels, map_h, map_w = node.feature.shape
        rows.append(f"| Output | {channels} x {map_h} x {map_w} (channels x height x width), stride {node.feature.stride:g} |")
        rows.append(f"| Channels | {channels} |")
        rows.append(f"| FLOPs on this image | {count_text(node.feature.flops)} (a multiply-add counts 2) |")
    rows.append(f"| Parameters | {info.parameters:,} |")
    rows.append(f"| Modules | {', '.join(f'`{name}`' for name in info.modules)} |")
    field = info.receptive_field
    if math.isinf(field):
        share = ""
    elif field >= width:
        share = f" (more than the image width, {width} px: the model pads)"
    else:
        share = f" ({field / width:.0%} of the image width, {width} px)"
    rows.append(f"| Theoretical receptive field | {field_text(field)}{share} |")
    if view.depth is not None:
        first = _first_depth(view, name)
        if node.runs:
            state = "yes"
        elif first is not None:
            state = f"no: pruned away (runs from L{first})"
        else:
            state = "no: only in training (deep supervision)"
        rows.append(f"| Runs at L{view.depth} | {state} |")
    elif not node.runs:
        rows.append("| Runs at inference | no: only in training (deep supervision) |")
    for conv in info.separable:
        rows += ["", f"**Depthwise separable:** {_separable_saving(conv)}."]
    incoming = view.incoming(name)
    if incoming:
        rows += ["", f"**{len(incoming)} incoming link{'s' if len(incoming) > 1 else ''}:**"]
        rows += [f"- {view.node(edge.source).info.label}" + (f": {edge.operation}" if edge.operation else "") for edge in incoming]
    if math.isinf(field):
        rows += ["", "Global average pooling (ASPP's image-pooling branch) lets every pixel from here on see the whole image."]
    return "\n".join(rows)


def _separable_saving(conv: SeparableConvInfo) -> str:
    """What a depthwise separable conv costs against the dense conv it replaces."""
    k = conv.kernel_size
    rate = f", rate {conv.dilation}" if conv.dilation > 1 else ""
    return (f"depthwise {k}x{k}{rate} on each of {conv.in_channels} channels, then pointwise 1x1 to {conv.out_channels}: "
            f"{conv.weights:,} weights, where a dense {k}x{k} conv from {conv.in_channels} to {conv.out_channels} channels has {conv.dense_weights:,}. "
            f"It needs `1/C_out + 1/k²` = 1/{conv.out_channels} + 1/{k * k} = **{conv.cost_ratio:.3f}** of the dense conv's weights and multiply-adds")


def node_image(view: NetworkView, name: str, mode: str = "activation") -> np.ndarray | None:
    """The selected node's map, enlarged without smoothing so its pixels stay visible."""
    picture = node_picture(view.node(name), mode)
    if picture is None:
        return None
    factor = max(1, DETAIL_WIDTH // picture.shape[1])
    return picture.repeat(factor, axis=0).repeat(factor, axis=1)


def summary_markdown(result: InsideResult) -> str:
    view = result.view
    height, width = view.image_size
    running = [node for node in view.nodes if node.runs]
    title = f"**{ARCH_NAMES.get(result.arch, result.arch)}{depth_name(view.depth)}** on {result.image_label} ({height} x {width})"
    lines = [f"{title}: {len(running)} of {len(view.nodes)} nodes run at inference, {count_text(view.flops, 'FLOPs')} and {view.parameters / 1e6:.2f} M parameters."]
    if view.pruning_depths:
        full = view.at_depth(max(view.pruning_depths))
        lines.append(f"The full network (L{max(view.pruning_depths)}) needs {count_text(full.flops, 'FLOPs')} and {full.parameters / 1e6:.2f} M parameters. "
                     f"Grey nodes do not run{depth_name(view.depth)}; their maps come from the same pass of the full network "
                     "(a node computes the same map at every depth that runs it).")
    elif len(running) < len(view.nodes):
        lines.append("Grey heads run only in training (deep supervision).")
    separable = [conv for node in running for conv in node.info.separable]
    if separable:
        weights, dense = sum(conv.weights for conv in separable), sum(conv.dense_weights for conv in separable)
        lines.append(f"Its {len(separable)} depthwise separable convs have {weights:,} weights where dense ones would have {dense:,} "
                     f"({weights / dense:.3f} of them; each one costs `1/C_out + 1/k²` of a dense conv).")
    lines.append(f"One pass with hooks and the summaries took {view.seconds:.2f} s.")
    return " ".join(lines)


# ---------------------------------------------------------------------------- the tab


class Inside:
    """The tab's handlers: a look (a model run with hooks, guarded against a change of image)
    and the light redraws of its result (depth, mode, node)."""

    def __init__(self, app: App):
        self.app = app
        self.looking = Job("inside", lambda request: look(app, request), self.present, raise_for_user,
                           lambda request: VIEW(summary=request.session.stale_note(request.current)))
        self.relighting = Job(None, self.relit, self.present_relit, raise_for_user)
        self.redrawing = Job(None, lambda request: request.choices, self.present_redraw, raise_for_user)

    def on_look(self, example, image_file, mask_file, set_name, arch, depth, mode, session=None):
        return self.looking.answer(lambda: parse_look(self.app, example, image_file, mask_file, set_name, arch, depth, mode, session))

    @staticmethod
    def present(request: Request, result: InsideResult) -> tuple:
        mode = request.choices["mode"]
        name = default_node(result.view)
        return VIEW(state=result, summary=summary_markdown(result), graph=graph_figure(result.view, mode, name), node=gr.update(choices=node_choices(result.view), value=name),
                    node_md=node_markdown(result.view, name), node_img=node_image(result.view, name, mode))

    def on_depth(self, result: InsideResult | None, depth, mode, name):
        return self.relighting.answer(lambda: no_image(result=result, depth=depth, mode=mode, name=name))

    def relit(self, request: Request) -> InsideResult | None:
        """The stored result relit at the request's depth (None: nothing to relight)."""
        result = request.choices["result"]
        if result is None or not result.view.pruning_depths:
            return None
        depth = self.app.check.depth(request.choices["depth"])
        return InsideResult(result.view.at_depth(min(depth, max(result.view.pruning_depths))), result.set_name, result.arch, result.image_label)

    @staticmethod
    def present_relit(request: Request, relit: InsideResult | None) -> tuple:
        if relit is None:
            return RELIT()
        view, mode, name = relit.view, request.choices["mode"], request.choices["name"]
        name = name if name in {n.info.name for n in view.nodes} else default_node(view)
        return RELIT(state=relit, summary=summary_markdown(relit), graph=graph_figure(view, mode, name), node_md=node_markdown(view, name), node_img=node_image(view, name, mode))

    def on_mode(self, result: InsideResult | None, mode, name):
        return self.redrawing.answer(lambda: no_image(result=result, mode=mode, name=name, view=MODE))

    def on_node(self, result: InsideResult | None, name, mode):
        return self.redrawing.answer(lambda: no_image(result=result, mode=mode, name=name, view=NODE))

    @staticmethod
    def present_redraw(request: Request, choices: dict) -> tuple:
        """Another mode or node of the stored result: the graph, and the node's text and map."""
        result, mode, name, view = choices["result"], choices["mode"], choices["name"], choices["view"]
        if result is None or name is None:
            return view()
        outputs = dict(graph=graph_figure(result.view, mode, name), node_md=node_markdown(result.view, name), node_img=node_image(result.view, name, mode))
        return view(**{key: value for key, value in outputs.items() if key in view.names})

    def on_set(self, set_name):
        choices = self.app.choices.archs(set_name) if set_name else []
        return gr.update(choices=[(ARCH_NAMES[a], a) for a in choices], value=choices[0] if choices else None), gr.update(interactive=bool(choices))

    @staticmethod
    def clear(identity, session):
        """A new image was picked: the look at another image goes."""
        return clear_outdated("inside", identity, session, VIEW, state=None, summary="", graph=None, node=gr.update(choices=[], value=None), node_md="", node_img=None)


def build(shared: Shared) -> gr.Tab:
    """The tab, its components and its events (see the module docstring)."""
    app = shared.app
    tab_handlers = Inside(app)
    set_name = shared.set_radio.value
    archs = app.choices.archs(set_name) if set_name else []

    with gr.Tab("Inside the network", id="inside") as tab:
        gr.Markdown(f"{INTRO} {explanations.inside_thumbnails()}")
        with gr.Row(equal_height=True):  # columns, so that they wrap on a phone
            with gr.Column(min_width=200):
                arch_dd = gr.Dropdown([(ARCH_NAMES[a], a) for a in archs], value=archs[0] if archs else None, label="Architecture")
            with gr.Column(min_width=260):
                mode_radio = gr.Radio(list(MODES.items()), value="activation", label="Each node shows")
            with gr.Column(min_width=160):
                look_btn = gr.Button("Look inside", variant="primary", interactive=bool(archs), size="lg")
        summary_md = gr.Markdown()
        graph_plot = gr.Plot(label="The network's graph", show_label=False)
        with gr.Row(equal_height=False):
            with gr.Column(min_width=280):
                node_dd = gr.Dropdown([], label="Node", interactive=True)
                node_md = gr.Markdown()
            with gr.Column(min_width=280):
                node_img = gr.Image(label="Its feature map", interactive=False, format="png", height=300, buttons=["fullscreen"])
        view_state = gr.State(None)

    outputs = dict(state=view_state, summary=summary_md, graph=graph_plot, node=node_dd, node_md=node_md, node_img=node_img)
    heavy = {"api_visibility": "private"} | shared.heavy
    look_btn.click(shared.on_device(tab_handlers.on_look), [*shared.image_inputs, arch_dd, shared.depth_sl, mode_radio, shared.session], VIEW.components(**outputs),
                   api_name="inside_look", **heavy)
    shared.depth_sl.change(tab_handlers.on_depth, [view_state, shared.depth_sl, mode_radio, node_dd], RELIT.components(**outputs),
                           show_progress="hidden", api_name="inside_relight", **shared.light)
    mode_radio.change(tab_handlers.on_mode, [view_state, mode_radio, node_dd], MODE.components(**outputs), show_progress="hidden", api_name="inside_mode", **shared.light)
    node_dd.input(tab_handlers.on_node, [view_state, node_dd, mode_radio], NODE.components(**outputs), show_progress="hidden", api_name="inside_node", **shared.light)
    shared.set_radio.change(tab_handlers.on_set, shared.set_radio, [arch_dd, look_btn], show_progress="hidden", api_name="inside_set", **shared.light)
    shared.image_changed.change(tab_handlers.clear, [shared.image_changed, shared.session], VIEW.components(**outputs), show_progress="hidden", api_name="inside_clear", **shared.light)
    return tab
