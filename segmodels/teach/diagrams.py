"""The drawing of each decoder's graph: its nodes (feature maps it computes), the edges between
them and where each node sits in the usual figure of the network, read from the decoder's
modules (widths, rates, upsampling) so that the drawing follows the model that runs.

A diagram is registered per decoder class (:func:`register_diagram`) and looked up by
:func:`diagram_for`; :mod:`segmodels.teach.network_graph` adds the encoder features and the
heads. Rows grow with depth (coarser maps), columns along the data flow:

* U-Net (Ronneberger et al., MICCAI 2015, Fig. 1): the block at level i is X(i, L - i) in
  U-Net++'s notation (L: the deepest level), at row i and column 2L - i;
* U-Net++ (Zhou et al., TMI 2019, Fig. 1): X(i, j) at row i and column i + 2j;
* U-Net 3+ (Huang et al., ICASSP 2020, Fig. 1): X_De^(i+1) at row i and column 2L - i;
* DeepLabV3+ (Chen et al., ECCV 2018, Fig. 2): ASPP's branches in a column beside the deepest
  feature, its projection and the low-level projection after them, the refining convs in the
  low-level row, :data:`LABEL_SPACING` columns apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..blocks import AtrousConv, ImagePooling, SeparableConv, separable_cost_ratio
from ..decoders import DeepLabV3PlusDecoder, UNet3PlusDecoder, UNetDecoder, UNetPlusPlusDecoder

HEAD_OFFSET = 0.8  # a head is drawn this many rows above the node it reads (segmodels.teach.network_graph adds the heads)
LABEL_SPACING = 1.3  # columns between the nodes of DeepLabV3+'s low-level row, whose labels sit side by side


def encoder_node(level: int) -> str:
    """Name of the graph node of the encoder feature at ``level`` (0 = shallowest): X(i, 0)
    in U-Net++'s notation."""
    return f"x{level}_0"


@dataclass(frozen=True)
class GraphNode:
    """One node of a decoder's graph: a feature map the decoder computes.

    Attributes:
        name: unique name, used by edges and :attr:`DecoderGraph.outputs`.
        label: what a figure shows, in the paper's notation (``X(1,2)``, ``X_De^3``).
        kind: role of the node (``decoder``, ``aspp``, ``pooling``, ``projection``, ``refine``).
        row: position in the usual drawing of the network; grows with depth (coarser maps).
        column: position in the drawing; grows along the data flow.
        modules: module paths, relative to the decoder, whose parameters and computation
            make up the node; the node's feature map is the output of the last one.
        detail: one line saying what the node computes.
    """

    name: str
    label: str
    kind: str
    row: float
    column: float
    modules: tuple[str, ...]
    detail: str = ""


@dataclass(frozen=True)
class GraphEdge:
    """A feature map flowing from node ``source`` into node ``target``, and what happens to
    it on the way (``operation``)."""

    source: str
    target: str
    operation: str = ""


@dataclass(frozen=True)
class DecoderGraph:
    """A decoder's nodes and edges. Edges may start at encoder features
    (:func:`encoder_node`); ``outputs`` names the node of each decoder output
    (``Decoder.out_channels``), which is where the heads attach."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]
    outputs: dict[str, str]


Diagram = Callable[[nn.Module, int], DecoderGraph]
DIAGRAMS: dict[type[nn.Module], Diagram] = {}


def register_diagram(decoder_class: type[nn.Module]) -> Callable[[Diagram], Diagram]:
    """Register the function drawing ``decoder_class`` (and its subclasses without their own)."""

    def register(draw: Diagram) -> Diagram:
        DIAGRAMS[decoder_class] = draw
        return draw

    return register


def diagram_for(decoder: nn.Module) -> Diagram | None:
    """The function drawing ``decoder``, registered for its class or the nearest base class;
    None when there is none."""
    return next((DIAGRAMS[cls] for cls in type(decoder).__mro__ if cls in DIAGRAMS), None)


def _check_num_features(decoder: nn.Module, num_features: int, expected: int) -> None:
    if num_features != expected:
        raise ValueError(f"{type(decoder).__name__} was built for {expected} encoder features, not {num_features}")


@register_diagram(UNetDecoder)
def unet_diagram(decoder: UNetDecoder, num_features: int) -> DecoderGraph:
    """The block at level i is node X(i, L - i) in U-Net++'s notation (L: the deepest
    level): the up-convolution of the node below meets the skip X(i, 0) there."""
    depth = len(decoder.blocks)
    _check_num_features(decoder, num_features, depth + 1)
    nodes, edges = [], []
    for level in reversed(range(depth)):
        name = f"x{level}_{depth - level}"
        below = encoder_node(depth) if level == depth - 1 else f"x{level + 1}_{depth - level - 1}"
        mode = decoder.blocks[level].up.mode
        nodes.append(GraphNode(name, f"X({level},{depth - level})", "decoder", level, 2 * depth - level, (f"blocks.{level}",),
                               f"{mode} up-convolution of the node below, concatenated with the skip, two 3x3 convs"))
        edges += [GraphEdge(below, name, f"up-convolution x2 ({mode})"), GraphEdge(encoder_node(level), name, "skip connection (concatenation)")]
    return DecoderGraph(tuple(nodes), tuple(edges), {"main": f"x0_{depth}"})


@register_diagram(UNetPlusPlusDecoder)
def unetpp_diagram(decoder: UNetPlusPlusDecoder, num_features: int) -> DecoderGraph:
    """Every node X(i, j), j >= 1, drawn at row i and column i + 2j as in the paper's
    Fig. 1: dense skips from X(i, 0..j-1) and the upsampled X(i + 1, j - 1) meet in it."""
    _check_num_features(decoder, num_features, decoder.max_depth + 1)
    up = "transposed conv x2" if decoder.upsampling == "transposed" else "bilinear x2"
    nodes, edges = [], []
    for j in range(1, decoder.max_depth + 1):
        for i in range(decoder.max_depth + 1 - j):
            name = f"x{i}_{j}"
            modules = (f"up.{name}", f"nodes.{name}") if decoder.upsampling == "transposed" else (f"nodes.{name}",)
            nodes.append(GraphNode(name, f"X({i},{j})", "decoder", i, i + 2 * j, modules, f"concatenation of X({i},0..{j - 1}) and the {up} X({i + 1},{j - 1}), two 3x3 convs"))
            edges += [GraphEdge(f"x{i}_{k}", name, "skip connection (concatenation)" if k == 0 else "dense skip (concatenation)") for k in range(j)]
            edges.append(GraphEdge(f"x{i + 1}_{j - 1}", name, up))
    return DecoderGraph(tuple(nodes), tuple(edges), {name: name for name in decoder.out_channels})


@register_diagram(UNet3PlusDecoder)
def unet3p_diagram(decoder: UNet3PlusDecoder, num_features: int) -> DecoderGraph:
    """Each stage X_De^i gets N links (N encoder levels): max-pooled shallower encoder
    features, the same-scale one, and the upsampled deeper stages; X_De^N is the deepest
    encoder feature itself."""
    num_levels = len(decoder.stages) + 1
    _check_num_features(decoder, num_features, num_levels)
    deepest = num_levels - 1
    nodes, edges = [], []
    for index, stage in enumerate(decoder.stages):
        level = stage.level
        name = f"x_de{level + 1}"
        nodes.append(GraphNode(name, f"X_De^{level + 1}", "decoder", level, 2 * deepest - level, (f"stages.{index}",),
                               f"{num_levels} scales squeezed by 3x3 convs, concatenated and fused by a 3x3 conv"))
        for k, squeeze in enumerate(stage.shallower):
            pool = squeeze[0]
            operation = f"max-pool /{pool.kernel_size}, 3x3 conv" if isinstance(pool, nn.MaxPool2d) else "same scale, 3x3 conv"
            edges.append(GraphEdge(encoder_node(k), name, operation))
        deeper = [f"x_de{k + 1}" for k in range(level + 1, deepest)] + [encoder_node(deepest)]
        edges += [GraphEdge(source, name, "bilinear upsampling, 3x3 conv") for source in deeper]
    outputs = {f"x_de{level + 1}": f"x_de{level + 1}" for level in range(deepest)} | {f"x_de{num_levels}": encoder_node(deepest)}
    return DecoderGraph(tuple(nodes), tuple(edges), outputs)


@register_diagram(DeepLabV3PlusDecoder)
def deeplabv3p_diagram(decoder: DeepLabV3PlusDecoder, num_features: int) -> DecoderGraph:
    """ASPP's parallel branches (their rates read from the layers) on the deepest
    feature, its 1x1 projection, the low-level projection of the stride-4 feature, and
    the two 3x3 refining convs where both meet."""
    if not decoder.low_level_index < num_features:
        raise ValueError(f"{type(decoder).__name__} reads encoder feature {decoder.low_level_index}, so it needs more than {num_features} features")
    deepest = num_features - 1
    branches = decoder.aspp.branches
    nodes, edges = [], []
    for k, branch in enumerate(branches):
        name = f"aspp.branches.{k}"
        if isinstance(branch, SeparableConv):
            label, kind = f"ASPP rate {branch.rate} dw+pw", "aspp"
            detail = f"atrous separable conv: depthwise 3x3, rate {branch.rate} (taps {branch.rate} pixels apart), then {_pointwise(branch)}"
        elif isinstance(branch, AtrousConv):
            label, kind = f"ASPP rate {branch.rate}", "aspp"
            detail = f"3x3 atrous conv, rate {branch.rate}: taps {branch.rate} pixels apart; {_as_separable(branch[0])}"
        elif isinstance(branch, ImagePooling):
            label, kind, detail = "Image pooling", "pooling", "global average pool, 1x1 conv, broadcast back to the map"
        else:
            label, kind, detail = "ASPP 1x1", "aspp", "1x1 conv"
        nodes.append(GraphNode(name, label, kind, deepest - 2 + k, deepest + 1.5, (name,), detail))
        edges.append(GraphEdge(encoder_node(deepest), name, "same feature to every branch"))
    nodes.append(GraphNode("aspp.project", "ASPP projection", "projection", deepest, deepest + 3, ("aspp.project",), f"concatenation of the {len(branches)} branches, 1x1 conv"))
    edges += [GraphEdge(f"aspp.branches.{k}", "aspp.project", "concatenation") for k in range(len(branches))]
    low_level_width = decoder.low_level_project[0].out_channels
    row = decoder.low_level_index
    nodes.append(GraphNode("low_level_project", f"Low-level 1x1 ({low_level_width})", "projection", row, deepest + 3, ("low_level_project",),
                           f"1x1 conv reducing the stride-4 feature to {low_level_width} channels"))
    edges.append(GraphEdge(encoder_node(row), "low_level_project", "stride-4 feature"))
    for k, conv in enumerate(decoder.refine):
        if isinstance(conv, SeparableConv):
            label, detail = f"Refine dw+pw #{k + 1}", f"separable conv: depthwise 3x3, then {_pointwise(conv)}"
        else:
            label, detail = f"Refine 3x3 #{k + 1}", f"3x3 conv; {_as_separable(conv[0])}"
        nodes.append(GraphNode(f"refine.{k}", label, "refine", row, deepest + 3 + LABEL_SPACING * (k + 1), (f"refine.{k}",), detail))
    edges += [GraphEdge("aspp.project", "refine.0", "bilinear upsampling to stride 4, concatenation"), GraphEdge("low_level_project", "refine.0", "concatenation")]
    edges += [GraphEdge(f"refine.{k - 1}", f"refine.{k}") for k in range(1, len(decoder.refine))]
    return DecoderGraph(tuple(nodes), tuple(edges), {"main": f"refine.{len(decoder.refine) - 1}"})


def _pointwise(conv: SeparableConv) -> str:
    return f"pointwise 1x1 from {conv.pointwise.in_channels} to {conv.pointwise.out_channels} channels"


def _as_separable(dense: nn.Conv2d) -> str:
    """What the depthwise separable form of a dense k x k conv would cost, as a share of it."""
    out, k = dense.out_channels, dense.kernel_size[0]
    return f"as a depthwise separable conv (separable=True) it would need 1/C_out + 1/k² = 1/{out} + 1/{k * k} = {separable_cost_ratio(out, k):.3f} of its weights and multiply-adds"


__all__ = ["DIAGRAMS", "HEAD_OFFSET", "DecoderGraph", "Diagram", "GraphEdge", "GraphNode", "LABEL_SPACING", "diagram_for", "encoder_node", "register_diagram"]
