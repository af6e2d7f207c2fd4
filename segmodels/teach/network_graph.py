"""The real graph of a loaded model, in the spirit of CNN Explainer (Wang et al., IEEE TVCG
2020), which draws every neuron of a network with its live activation. It is read from the
model, not typed per architecture:

- the encoder gives one node X(i, 0) per feature it returns; which of its modules belong to
  which node is found by running it with 1, 2, ... levels (``Encoder.forward(x, num_levels)``)
  and seeing which modules each extra level adds;
- the decoder's nodes and edges come from its diagram (:mod:`segmodels.teach.diagrams`), read
  from its own modules (widths, ASPP rates, upsampling);
- every head (:attr:`SegmentationModel.heads`) is a node on the decoder output it reads.

Per node: its parameters (every parameter of the model belongs to exactly one node), what its
depthwise separable convolutions save against dense ones (:class:`SeparableConvInfo`) and its
theoretical receptive field r (the input window one output pixel can see; for a layer with
kernel k, dilation d and input jump J, r' = r + d (k - 1) J, :mod:`segmodels.receptive_field`).

U-Net++ (Zhou et al., TMI 2019, Sec. III-C) at pruning depth d runs only X(i, j) with
i + j <= d and the head on X(0, d); which nodes run at each depth is observed by running the
model at that depth, so a view of the network can be relit for any depth without another pass
(:mod:`segmodels.teach.look_inside`).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ..blocks import SeparableConv
from ..models import SegmentationModel
from ..receptive_field import Field, theoretical_receptive_field
from .diagrams import HEAD_OFFSET, GraphEdge, diagram_for, encoder_node

PROBE_SIDE = 64  # smallest side of the blank image the structure is probed with


@dataclass(frozen=True)
class SeparableConvInfo:
    """A depthwise separable convolution of a node (:class:`segmodels.blocks.SeparableConv`:
    depthwise k x k, then pointwise 1x1) and the dense k x k convolution from C_in to C_out
    channels it replaces.

    Attributes:
        module: full module path.
        kernel_size, dilation: of the depthwise convolution.
        in_channels, out_channels: C_in and C_out.
        weights: weights of its two convolutions, k^2 C_in + C_in C_out.
        dense_weights: weights of the dense convolution, k^2 C_in C_out.
        cost_ratio: 1/C_out + 1/k^2, the share of the dense convolution's weights and
            multiply-adds it needs (MobileNets, Howard et al. 2017, Sec. 3.1, from Eqs. 2 and 5).
    """

    module: str
    kernel_size: int
    dilation: int
    in_channels: int
    out_channels: int
    weights: int
    dense_weights: int
    cost_ratio: float

    @classmethod
    def of(cls, name: str, conv: SeparableConv) -> SeparableConvInfo:
        depthwise, pointwise = conv.depthwise, conv.pointwise
        kernel = depthwise.kernel_size[0]
        weights = depthwise.weight.numel() + pointwise.weight.numel()
        dense = kernel * kernel * depthwise.in_channels * pointwise.out_channels
        return cls(name, kernel, depthwise.dilation[0], depthwise.in_channels, pointwise.out_channels, weights, dense, conv.cost_ratio)


@dataclass(frozen=True)
class NodeInfo:
    """What a node is, independent of the image.

    Attributes:
        name, label, kind, row, column, detail: as declared (see
            :class:`segmodels.teach.diagrams.GraphNode`); encoder nodes are ``encoder``, heads ``head``.
        modules: full module paths of the node.
        parameters: parameters of those modules.
        receptive_field: theoretical receptive field of one output pixel, in input pixels
            (``inf``: the whole image, after global pooling).
        separable: its depthwise separable convolutions.
    """

    name: str
    label: str
    kind: str
    row: float
    column: float
    detail: str
    modules: tuple[str, ...]
    parameters: int
    receptive_field: float
    separable: tuple[SeparableConvInfo, ...] = ()


@dataclass(frozen=True)
class NetworkGraph:
    """The structure of a model: nodes, edges and which nodes run at each depth
    (``running[d]``; the key is None for a model that cannot be pruned)."""

    architecture: str
    nodes: tuple[NodeInfo, ...]
    edges: tuple[GraphEdge, ...]
    pruning_depths: tuple[int, ...]
    running: Mapping[int | None, frozenset[str]]
    heads: Mapping[str, tuple[str, ...]]  # node name -> names of the head nodes reading it
    owner: Mapping[str, str]  # full module name -> node name


_graphs: weakref.WeakKeyDictionary[SegmentationModel, NetworkGraph] = weakref.WeakKeyDictionary()
_graphs_lock = threading.Lock()


def check_model(model: nn.Module) -> None:
    if not isinstance(model, SegmentationModel):
        raise ValueError(f"can only look inside a segmodels SegmentationModel (encoder, decoder, heads); got {type(model).__name__}")
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call model.eval() first (a training-mode pass would update its batch-norm statistics)")


def full_depth(model: SegmentationModel) -> dict:
    return {"depth": max(model.pruning_depths)} if model.pruning_depths else {}


def _probe(model: SegmentationModel) -> torch.Tensor:
    divisor = model.required_divisor
    side = divisor * max(2, math.ceil(PROBE_SIDE / divisor))
    return torch.zeros(1, 3, side, side, device=next(model.parameters()).device)


def _modules_run(root: nn.Module, run) -> set[str]:
    """Names (relative to ``root``) of the modules that run during ``run()``."""
    names = {id(module): name for name, module in root.named_modules()}
    seen: set[str] = set()
    thread = threading.get_ident()

    def note(module, _inputs):
        if threading.get_ident() == thread:
            seen.add(names[id(module)])

    hooks = [module.register_forward_pre_hook(note) for module in root.modules()]
    try:
        with torch.inference_mode():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _encoder_stages(model: SegmentationModel, probe: torch.Tensor) -> list[set[str]]:
    """For each encoder feature, the (full) names of the modules that computing it adds."""
    stages, before = [], set()
    for levels in range(1, len(model.encoder.out_channels) + 1):
        ran = _modules_run(model.encoder, lambda levels=levels: model.encoder(probe, num_levels=levels))
        stages.append({f"encoder.{name}" if name else "encoder" for name in ran - before})
        before = ran
    return stages


def _owners(model: SegmentationModel, groups: dict[str, tuple[str, ...]], stages: list[set[str]]) -> dict[str, str]:
    """{full module name: node name}: encoder modules by stage, the rest by declared prefix."""
    owner = {name: encoder_node(level) for level, names in enumerate(stages) for name in names}
    for name, _ in model.named_modules():
        for node, prefixes in groups.items():
            if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
                owner[name] = node
    return owner


def _outermost(names: set[str], owner: dict[str, str]) -> tuple[str, ...]:
    """The largest modules all of whose submodules are in ``names``, e.g.
    ``encoder.body.blocks.1`` for a whole timm stage."""
    node = owner[next(iter(names))]
    whole = {name for name in names if all(owner.get(other) == node for other in owner if other.startswith(name + "."))}
    return tuple(sorted(name for name in whole if name.rpartition(".")[0] not in whole))


def _head_role(head: str, running: Mapping[int | None, frozenset[str]], num_heads: int) -> str:
    """What a head is for: the model's output (at which pruning depths) or deep supervision."""
    depths = [depth for depth, names in running.items() if head in names]
    training = "deep supervision in training" if num_heads > 1 else ""
    if not depths:
        return "deep supervision (training only)"
    if depths == list(running):
        return ", ".join(filter(None, ["the output", training]))
    return ", ".join(filter(None, [f"the output at L{', L'.join(map(str, depths))}", training]))


def _head_field(head: nn.Module, field: Field) -> Field:
    return field.through(head.kernel_size[0], head.stride[0], head.dilation[0], head.padding[0])


def _build_graph(model: SegmentationModel) -> NetworkGraph:
    num_features = len(model.encoder.out_channels)
    draw = diagram_for(model.decoder)
    if draw is None:
        raise ValueError(f"cannot draw {type(model).__name__}: {type(model.decoder).__name__} has no diagram (segmodels.teach.diagrams.register_diagram)")
    declared = draw(model.decoder, num_features)
    probe = _probe(model)
    stages = _encoder_stages(model, probe)
    groups = {node.name: tuple(f"decoder.{m}" for m in node.modules) for node in declared.nodes}
    head_input = {f"head.{name}": declared.outputs[name] for name in model.heads}
    groups |= {f"head.{name}": (f"heads.{name}",) for name in model.heads}
    owner = _owners(model, groups, stages)

    parameters: dict[str, int] = {}
    for name, module in model.named_modules():
        count = sum(p.numel() for p in module.parameters(recurse=False))
        if count and name not in owner:
            raise ValueError(f"the diagram of {type(model.decoder).__name__} declares no node for {name!r} ({count} parameters)")
        if count:
            parameters[owner[name]] = parameters.get(owner[name], 0) + count

    fields: dict[str, Field] = {}
    for layer in theoretical_receptive_field(model, tuple(probe.shape[-2:]), **full_depth(model)):
        if layer.name in owner:
            fields[owner[layer.name]] = Field(layer.size, layer.jump, layer.start)
    for head, source in head_input.items():
        fields[head] = _head_field(model.heads[head.removeprefix("head.")], fields[source])

    reductions = model.encoder.reductions
    nodes = [
        NodeInfo(encoder_node(i), f"X({i},0)", "encoder", i, i, f"encoder feature at stride {reductions[i]}", _outermost(stages[i], owner), parameters.get(encoder_node(i), 0),
                 fields[encoder_node(i)].size)
        for i in range(num_features)
    ]
    separable: dict[str, tuple[SeparableConvInfo, ...]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SeparableConv):
            separable[owner[name]] = separable.get(owner[name], ()) + (SeparableConvInfo.of(name, module),)
    nodes += [NodeInfo(n.name, n.label, n.kind, n.row, n.column, n.detail, groups[n.name], parameters.get(n.name, 0), fields[n.name].size, separable.get(n.name, ())) for n in declared.nodes]
    labels = {node.name: node.label for node in nodes}
    positions = {node.name: (node.row, node.column) for node in nodes}
    depths = tuple(model.pruning_depths)
    running = {depth: _nodes_run(model, declared.nodes, probe, depth) for depth in (depths or (None,))}
    for head, source in head_input.items():
        module = model.heads[head.removeprefix("head.")]
        detail = f"{module.kernel_size[0]}x{module.kernel_size[0]} conv to {module.out_channels} class logits; {_head_role(head, running, len(head_input))}"
        row, column = positions[source]
        nodes.append(NodeInfo(head, f"Head on {labels[source]}", "head", row - HEAD_OFFSET, column, detail, groups[head], parameters.get(head, 0), fields[head].size))

    edges = [*declared.edges, *(GraphEdge(source, head, "head") for head, source in head_input.items())]
    heads: dict[str, tuple[str, ...]] = {}
    for head, source in head_input.items():
        heads[source] = heads.get(source, ()) + (head,)
    return NetworkGraph(type(model).__name__, tuple(nodes), tuple(edges), depths, running, heads, owner)


def _nodes_run(model: SegmentationModel, decoder_nodes, probe: torch.Tensor, depth: int | None) -> frozenset[str]:
    """Names of the nodes that run in one inference pass at ``depth``."""
    computed: list[int] = []
    hook = model.encoder.register_forward_hook(lambda _module, _inputs, features: computed.append(len(features)))
    try:
        ran = _modules_run(model, lambda: model(probe, depth=depth))
    finally:
        hook.remove()
    names = {encoder_node(level) for level in range(computed[0])}
    names |= {node.name for node in decoder_nodes if f"decoder.{node.modules[-1]}" in ran}
    names |= {f"head.{name}" for name in model.heads if f"heads.{name}" in ran}
    return frozenset(names)


def network_graph(model: SegmentationModel) -> NetworkGraph:
    """The graph of ``model`` (an eval-mode :class:`SegmentationModel`), probed once on a
    blank image and cached for as long as the model lives."""
    check_model(model)
    with _graphs_lock:
        graph = _graphs.get(model)
        if graph is None:
            graph = _graphs[model] = _build_graph(model)
        return graph


__all__ = ["NetworkGraph", "NodeInfo", "PROBE_SIDE", "SeparableConvInfo", "check_model", "full_depth", "network_graph"]
