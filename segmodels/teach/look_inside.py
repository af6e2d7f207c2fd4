"""Inside the network: what each node of a model's graph (:mod:`segmodels.teach.network_graph`)
computes on one image. One forward pass with hooks under ``torch.inference_mode`` gives every
node its output shape, its FLOPs counted from the shapes as ``torch.utils.flop_counter``
counts them (2 per multiply-add: a k x k conv from C_in to C_out channels on an H x W output
costs 2 k^2 C_in C_out H W / groups) and two thumbnails of its feature map
(:mod:`segmodels.teach.feature_maps`). Only the thumbnails are kept, never the full tensors.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..models import SegmentationModel
from .diagrams import GraphEdge, encoder_node
from .feature_maps import summarise, thumbnail_size
from .network_graph import NodeInfo, check_model, full_depth, network_graph

THUMBNAIL_SIDE = 96
THUMBNAIL_SIDES = (8, 512)
FLOP_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


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
    check_model(model)
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
            model(x, **full_depth(model))
    finally:
        for hook in hooks:
            hook.remove()
    features = {name: FeatureMap(shape, stride, flops.get(name, 0), activation, colour) for name, (shape, stride, activation, colour) in maps.items()}
    view_depth = None if not graph.pruning_depths else (depth if depth is not None else model.depth if model.depth is not None else max(graph.pruning_depths))
    lit = graph.running[view_depth]
    nodes = tuple(Node(info, info.name in lit, features.get(info.name)) for info in graph.nodes)
    return NetworkView(graph.architecture, view_depth, (height, width), nodes, graph.edges, graph.pruning_depths, graph.running, time.perf_counter() - started)


__all__ = ["FeatureMap", "NetworkView", "Node", "THUMBNAIL_SIDE", "look_inside"]
