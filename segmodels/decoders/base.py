"""The decoder interface :class:`~segmodels.models.SegmentationModel` relies on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def encoder_node(level: int) -> str:
    """Name of the graph node of the encoder feature at ``level`` (0 = shallowest): X(i, 0)
    in U-Net++'s notation."""
    return f"x{level}_0"


def check_num_features(decoder: nn.Module, num_features: int, expected: int) -> None:
    """Raise a ``ValueError`` unless a decoder built for ``expected`` encoder features is asked
    for its graph with ``num_features``."""
    if num_features != expected:
        raise ValueError(f"{type(decoder).__name__} was built for {expected} encoder features, not {num_features}")


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


class Decoder(nn.Module):
    """Maps encoder features (shallow to deep) to named decoded features: the main one
    first, then those deep supervision puts a head on.

    Attributes:
        out_channels: {name: channels} of every output, in the order :meth:`forward` returns them.
    """

    out_channels: dict[str, int]

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def graph(self, num_features: int) -> DecoderGraph:
        """The decoder's wiring when it gets ``num_features`` encoder features, read from its
        modules (widths, rates, upsampling); see :class:`DecoderGraph`."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its graph")
