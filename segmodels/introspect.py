"""Inside the network: the real graph of a loaded model and what each node computes on one
image, in the spirit of CNN Explainer (Wang et al., IEEE TVCG 2020), which draws every
neuron of a network with its live activation.

The graph is read from the model, not typed per architecture:

- the encoder gives one node X(i, 0) per feature it returns; which of its modules belong to
  which node is found by running it with 1, 2, ... levels (``Encoder.forward(x, num_levels)``)
  and seeing which modules each extra level adds;
- the decoder declares its nodes and edges (:meth:`segmodels.decoders.Decoder.graph`), read
  from its own modules (widths, ASPP rates, upsampling);
- every head (:attr:`SegmentationModel.heads`) is a node on the decoder output it reads.

Per node: its parameters (every parameter of the model belongs to exactly one node), what its
depthwise separable convolutions save against dense ones (:class:`SeparableConvInfo`), its
theoretical receptive field r (the input window one output pixel can see; for a layer with
kernel k, dilation d and input jump J, r' = r + d (k - 1) J, :mod:`segmodels.receptive_field`),
and, from one forward pass with hooks under ``torch.inference_mode``, its output shape, its
FLOPs counted from the shapes as ``torch.utils.flop_counter`` counts them (2 per
multiply-add: a k x k conv from C_in to C_out channels on an H x W output costs
2 k^2 C_in C_out H W / groups) and two thumbnails of its feature map: the mean absolute
activation over channels, and the first three principal components of the channel vectors
as red, green and blue (the same colour means a similar feature vector). Only the thumbnails
are kept, never the full tensors.

U-Net++ (Zhou et al., TMI 2019, Sec. III-C) at pruning depth d runs only X(i, j) with
i + j <= d and the head on X(0, d); which nodes run at each depth is observed by running the
model at that depth, so a :class:`NetworkView` can be relit for any depth without another pass.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .blocks import SeparableConv
from .decoders.base import GraphEdge, encoder_node
from .models import SegmentationModel
from .receptive_field import Field, theoretical_receptive_field

THUMBNAIL_SIDE = 96
THUMBNAIL_SIDES = (8, 512)
PROBE_SIDE = 64  # smallest side of the blank image the structure is probed with
STRETCH_QUANTILES = (0.01, 0.99)  # thumbnails map these quantiles of a map to black and white
FLOP_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
HEAD_OFFSET = 0.8  # a head is drawn this many rows above the node it reads


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
            :class:`segmodels.decoders.base.GraphNode`); encoder nodes are ``encoder``, heads ``head``.
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
class FeatureMap:
    """A node's output in the captured pass, summarised.

    Attributes:
        shape: channels x height x width (the padded input's map, as the model computed it).
        stride: input pixels per feature pixel.
        flops: floating-point operations of the node's convolutions (a multiply-add counts 2).
        activation: h x w uint8, the mean |activation| over channels, stretched to 0..255.
        pca: h x w x 3 uint8, the first three principal components of the channel vectors
            as RGB. Both thumbnails cover the image (padding cropped), longest side at most
            the requested thumbnail side.
    """

    shape: tuple[int, int, int]
    stride: float
    flops: int
    activation: np.ndarray
    pca: np.ndarray

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class Node:
    """A node of a :class:`NetworkView`: what it is, whether it runs at the view's depth and,
    when the captured pass computed it, its feature map."""

    info: NodeInfo
    runs: bool
    feature: FeatureMap | None


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


@dataclass(frozen=True)
class NetworkView:
    """The graph of a model with every node's feature map on one image.

    Attributes:
        architecture: the model's class name.
        depth: pruning depth the view is lit for (None: the model cannot be pruned).
        image_size: height and width of the image.
        nodes, edges: the graph; ``Node.runs`` says whether a node runs at ``depth``.
        pruning_depths: depths :meth:`at_depth` accepts (empty: only None).
        running: which nodes run at each depth.
        seconds: wall time of the captured pass and its summaries.
    """

    architecture: str
    depth: int | None
    image_size: tuple[int, int]
    nodes: tuple[Node, ...]
    edges: tuple[GraphEdge, ...]
    pruning_depths: tuple[int, ...]
    running: Mapping[int | None, frozenset[str]]
    seconds: float

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.info.name == name:
                return node
        raise ValueError(f"no node {name!r} in this {self.architecture}; nodes: {', '.join(n.info.name for n in self.nodes)}")

    def at_depth(self, depth: int | None) -> NetworkView:
        """The same feature maps, lit for another pruning depth."""
        if depth not in self.running:
            allowed = ", ".join(map(str, self.pruning_depths)) if self.pruning_depths else "None (it cannot be pruned)"
            raise ValueError(f"{self.architecture} depth must be one of {allowed}; got {depth!r}")
        lit = self.running[depth]
        return replace(self, depth=depth, nodes=tuple(replace(node, runs=node.info.name in lit) for node in self.nodes))

    @property
    def flops(self) -> int:
        """FLOPs of the nodes that run at :attr:`depth`: one forward pass at that depth."""
        return sum(node.feature.flops for node in self.nodes if node.runs and node.feature is not None)

    @property
    def parameters(self) -> int:
        """Parameters of the nodes that run at :attr:`depth`."""
        return sum(node.info.parameters for node in self.nodes if node.runs)

    def incoming(self, name: str) -> list[GraphEdge]:
        return [edge for edge in self.edges if edge.target == name]


_graphs: weakref.WeakKeyDictionary[SegmentationModel, NetworkGraph] = weakref.WeakKeyDictionary()
_graphs_lock = threading.Lock()


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, SegmentationModel):
        raise ValueError(f"can only look inside a segmodels SegmentationModel (encoder, decoder, heads); got {type(model).__name__}")
    if model.training:
        raise ValueError(f"{type(model).__name__} is in training mode; call model.eval() first (a training-mode pass would update its batch-norm statistics)")


def _full_depth(model: SegmentationModel) -> dict:
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
    try:
        declared = model.decoder.graph(num_features)
    except NotImplementedError as error:
        raise ValueError(f"cannot draw {type(model).__name__}: {error}") from None
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
            raise ValueError(f"{type(model.decoder).__name__}.graph() declares no node for {name!r} ({count} parameters)")
        if count:
            parameters[owner[name]] = parameters.get(owner[name], 0) + count

    fields: dict[str, Field] = {}
    for layer in theoretical_receptive_field(model, tuple(probe.shape[-2:]), **_full_depth(model)):
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
    _check_model(model)
    with _graphs_lock:
        graph = _graphs.get(model)
        if graph is None:
            graph = _graphs[model] = _build_graph(model)
        return graph


def _as_batch(image: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    expected = "an H x W x 3 uint8 RGB array or a 3 x H x W float tensor in [0, 1]"
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ValueError(f"image must be {expected}; got a {image.dtype} array of shape {image.shape}")
        return torch.tensor(image, device=device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if isinstance(image, torch.Tensor):
        batch = image.unsqueeze(0) if image.dim() == 3 else image
        if batch.dim() != 4 or batch.shape[:2] != (1, 3) or not batch.is_floating_point() or 0 in batch.shape:
            raise ValueError(f"image must be {expected}; got a {image.dtype} tensor of shape {tuple(image.shape)}")
        return batch.to(device=device, dtype=torch.float32)
    raise ValueError(f"image must be {expected}; got {type(image).__name__}")


def thumbnail_size(image_size: tuple[int, int], side: int) -> tuple[int, int]:
    """(height, width) with the image's aspect ratio and the longest side ``side``."""
    height, width = image_size
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _stretch(values: torch.Tensor) -> torch.Tensor:
    """Map the :data:`STRETCH_QUANTILES` of ``values`` to 0 and 1 (0.5 where it is constant)."""
    low, high = torch.quantile(values.flatten(), torch.tensor(STRETCH_QUANTILES, device=values.device))
    spread = high - low
    if spread <= 1e-6 * max(1.0, high.abs().item()):
        return torch.full_like(values, 0.5)
    return ((values - low) / spread).clamp_(0, 1)


def _to_uint8(values: torch.Tensor) -> np.ndarray:
    return values.mul(255).round_().to(torch.uint8).cpu().numpy()


def principal_components(pixels: torch.Tensor, count: int = 3) -> torch.Tensor:
    """Projections (P x count) of P centred channel vectors on their first ``count``
    principal components (eigenvectors of the C x C covariance, largest eigenvalue first;
    zero columns when C < count). Each component's sign makes its largest loading positive."""
    centred = pixels - pixels.mean(0, keepdim=True)
    covariance = centred.T @ centred / max(1, centred.shape[0] - 1)
    _, vectors = torch.linalg.eigh(covariance)
    top = vectors[:, -count:].flip(1)
    signs = torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))
    projections = centred @ (top * torch.where(signs == 0, 1.0, signs))
    return F.pad(projections, (0, count - projections.shape[1]))


def summarise(feature: torch.Tensor, valid: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of a 1 x C x h x w feature map: its valid top-left ``valid`` region (the
    rest is padding) resampled to ``size`` by area averaging (repetition when enlarging),
    as (mean |activation|, PCA colour); see :class:`FeatureMap`."""
    region = feature[0, :, : valid[0], : valid[1]].float()
    activation = F.adaptive_avg_pool2d(region.abs().mean(0, keepdim=True), size)[0]
    pooled = F.adaptive_avg_pool2d(region, size)
    components = principal_components(pooled.flatten(1).T)
    colour = torch.stack([_stretch(c) for c in components.T], dim=-1).reshape(*size, 3)
    return _to_uint8(_stretch(activation)), _to_uint8(colour)


def _flops(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """FLOPs of one conv, transposed conv or linear call, as ``torch.utils.flop_counter``
    counts them: 2 x (weight elements) x (output positions; input positions for a
    transposed conv). Bias additions are not counted."""
    if isinstance(module, nn.Linear):
        return 2 * module.weight.numel() * (output.numel() // output.shape[-1])
    positions = (inputs if isinstance(module, nn.ConvTranspose2d) else output).shape
    return 2 * module.weight.numel() * positions[0] * math.prod(positions[2:])


def look_inside(model: SegmentationModel, image: np.ndarray | torch.Tensor, depth: int | None = None, thumbnail_side: int = THUMBNAIL_SIDE) -> NetworkView:
    """Run ``model`` once on ``image`` with hooks and return its graph with every node's
    feature map (:class:`NetworkView`).

    The pass runs the whole network (U-Net++ at its full depth), so that every node has a
    feature map; the view is lit for ``depth`` (None: the model's default) and
    :meth:`NetworkView.at_depth` relights it for any other. A node's map at a shallower depth
    is the same, since the nodes it needs are the same.

    Args:
        model: an eval-mode :class:`SegmentationModel`.
        image: H x W x 3 uint8 RGB, or 3 x H x W float in [0, 1].
        depth: pruning depth to light (one of ``model.pruning_depths``).
        thumbnail_side: longest side of the thumbnails, 8..512 pixels.
    """
    _check_model(model)
    model.check_depth(depth)
    if not isinstance(thumbnail_side, int) or not THUMBNAIL_SIDES[0] <= thumbnail_side <= THUMBNAIL_SIDES[1]:
        raise ValueError(f"thumbnail_side must be an integer from {THUMBNAIL_SIDES[0]} to {THUMBNAIL_SIDES[1]}; got {thumbnail_side!r}")
    graph = network_graph(model)
    started = time.perf_counter()
    x = _as_batch(image, next(model.parameters()).device)
    height, width = x.shape[-2:]
    divisor = model.required_divisor
    padded = (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
    size = thumbnail_size((height, width), thumbnail_side)
    infos = {info.name: info for info in graph.nodes}
    modules = dict(model.named_modules())
    names = {id(module): name for name, module in modules.items()}
    heads = {info.name: modules[info.modules[0]] for info in graph.nodes if info.kind == "head"}
    flops: dict[str, int] = {}
    maps: dict[str, tuple] = {}
    thread = threading.get_ident()

    def record(node: str, feature: torch.Tensor) -> None:
        rows, columns = feature.shape[-2:]
        valid = (math.ceil(rows * height / padded[0]), math.ceil(columns * width / padded[1]))
        maps[node] = (tuple(feature.shape[1:]), padded[0] / rows, *summarise(feature, valid, size))
        for head in graph.heads.get(node, ()):
            module = heads[head]
            logits = module(feature)
            flops[head] = _flops(module, feature, logits)
            record(head, logits)

    def count(module, inputs, output):
        if threading.get_ident() == thread:
            node = graph.owner[names[id(module)]]
            flops[node] = flops.get(node, 0) + _flops(module, inputs[0], output)

    def encoded(_module, _inputs, features):
        if threading.get_ident() == thread:
            for level, feature in enumerate(features):
                record(encoder_node(level), feature)

    def decoded(node: str):
        def hook(_module, _inputs, output):
            if threading.get_ident() == thread:
                record(node, output)

        return hook

    hooks = [modules[name].register_forward_hook(count) for name, node in graph.owner.items() if isinstance(modules[name], FLOP_MODULES) and infos[node].kind != "head"]
    hooks.append(model.encoder.register_forward_hook(encoded))
    hooks += [modules[info.modules[-1]].register_forward_hook(decoded(info.name)) for info in graph.nodes if info.kind not in ("encoder", "head")]
    try:
        with torch.inference_mode():
            model(x, **_full_depth(model))
    finally:
        for hook in hooks:
            hook.remove()
    features = {name: FeatureMap(shape, stride, flops.get(name, 0), activation, colour) for name, (shape, stride, activation, colour) in maps.items()}
    view_depth = None if not graph.pruning_depths else (depth if depth is not None else model.depth if model.depth is not None else max(graph.pruning_depths))
    lit = graph.running[view_depth]
    nodes = tuple(Node(info, info.name in lit, features.get(info.name)) for info in graph.nodes)
    return NetworkView(graph.architecture, view_depth, (height, width), nodes, graph.edges, graph.pruning_depths, graph.running, time.perf_counter() - started)


__all__ = ["FeatureMap", "NetworkGraph", "NetworkView", "Node", "NodeInfo", "SeparableConvInfo", "look_inside", "network_graph", "principal_components", "summarise", "thumbnail_size"]
