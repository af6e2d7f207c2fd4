"""DeepLabV3+'s decoder (Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..blocks import ASPP, AtrousConv, ConvBNReLU, ImagePooling, SeparableConv, separable_cost_ratio, upsample_to
from .base import Decoder, DecoderGraph, GraphEdge, GraphNode, encoder_node

ASPP_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}
LABEL_SPACING = 1.3  # columns between the nodes of the low-level row, whose labels sit side by side


class DeepLabV3PlusDecoder(Decoder):
    """ASPP on the deepest feature, then the decoder of Sec. 3.1 (Fig. 2): the stride-4
    low-level feature is projected by a 1x1 conv to ``low_level_channels`` (48), concatenated
    with the ASPP output upsampled 4x (bilinear), and refined by two 3x3 convs of
    ``aspp_channels`` (256). One output, ``main``, at stride 4.

    With ``separable`` (the default, as published: the abstract "apply the depthwise separable
    convolution to both Atrous Spatial Pyramid Pooling and decoder modules"; atrous separable
    convolution in Sec. 3.1, Fig. 3) ASPP's three atrous convs and the two refining 3x3 convs
    are depthwise separable (:class:`~segmodels.blocks.SeparableConv`); without it they are
    dense 3x3 convs, as in DeepLabV3's ASPP.

    Args:
        encoder_channels: width of each encoder feature, shallow to deep.
        encoder_reductions: stride of each encoder feature; one must be 4.
        output_stride: stride of the deepest feature, 16 (ASPP rates 6, 12, 18) or 8 (rates doubled).
        aspp_channels: width of ASPP and the decoder (256 in the paper).
        low_level_channels: width of the projected low-level feature (48 in the paper).
        separable: depthwise separable 3x3 convs in ASPP and the decoder (default) or dense ones.
    """

    def __init__(self, encoder_channels: Sequence[int], encoder_reductions: Sequence[int], output_stride: int = 16, aspp_channels: int = 256, low_level_channels: int = 48,
                 separable: bool = True):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise ValueError(f"output_stride must be 16 or 8, got {output_stride}")
        if 4 not in encoder_reductions:
            raise ValueError(f"DeepLabV3+ needs an encoder feature at stride 4, got strides {list(encoder_reductions)}")
        self.low_level_index = list(encoder_reductions).index(4)
        self.aspp = ASPP(encoder_channels[-1], aspp_channels, ASPP_RATES[output_stride], separable=separable)
        self.low_level_project = ConvBNReLU(encoder_channels[self.low_level_index], low_level_channels, kernel_size=1)
        refine_conv = SeparableConv if separable else ConvBNReLU
        self.refine = nn.Sequential(
            refine_conv(aspp_channels + low_level_channels, aspp_channels),
            refine_conv(aspp_channels, aspp_channels),
        )
        self.out_channels = {"main": aspp_channels}

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        low_level = self.low_level_project(features[self.low_level_index])  # B x 48 x H/4 x W/4
        context = upsample_to(self.aspp(features[-1]), low_level.shape[-2:])  # B x 256 x H/4 x W/4
        return {"main": self.refine(torch.cat([context, low_level], dim=1))}

    def graph(self, num_features: int) -> DecoderGraph:
        """ASPP's parallel branches (their rates read from the layers) on the deepest
        feature, its 1x1 projection, the low-level projection of the stride-4 feature, and
        the two 3x3 refining convs where both meet."""
        if not self.low_level_index < num_features:
            raise ValueError(f"{type(self).__name__} reads encoder feature {self.low_level_index}, so it needs more than {num_features} features")
        deepest = num_features - 1
        nodes, edges = [], []
        for k, branch in enumerate(self.aspp.branches):
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
        nodes.append(GraphNode("aspp.project", "ASPP projection", "projection", deepest, deepest + 3, ("aspp.project",), f"concatenation of the {len(self.aspp.branches)} branches, 1x1 conv"))
        edges += [GraphEdge(f"aspp.branches.{k}", "aspp.project", "concatenation") for k in range(len(self.aspp.branches))]
        low_level_width = self.low_level_project[0].out_channels
        row = self.low_level_index
        nodes.append(GraphNode("low_level_project", f"Low-level 1x1 ({low_level_width})", "projection", row, deepest + 3, ("low_level_project",),
                               f"1x1 conv reducing the stride-4 feature to {low_level_width} channels"))
        edges.append(GraphEdge(encoder_node(row), "low_level_project", "stride-4 feature"))
        for k, conv in enumerate(self.refine):
            if isinstance(conv, SeparableConv):
                label, detail = f"Refine dw+pw #{k + 1}", f"separable conv: depthwise 3x3, then {_pointwise(conv)}"
            else:
                label, detail = f"Refine 3x3 #{k + 1}", f"3x3 conv; {_as_separable(conv[0])}"
            nodes.append(GraphNode(f"refine.{k}", label, "refine", row, deepest + 3 + LABEL_SPACING * (k + 1), (f"refine.{k}",), detail))
        edges += [GraphEdge("aspp.project", "refine.0", "bilinear upsampling to stride 4, concatenation"), GraphEdge("low_level_project", "refine.0", "concatenation")]
        edges += [GraphEdge(f"refine.{k - 1}", f"refine.{k}") for k in range(1, len(self.refine))]
        return DecoderGraph(tuple(nodes), tuple(edges), {"main": f"refine.{len(self.refine) - 1}"})


def _pointwise(conv: SeparableConv) -> str:
    return f"pointwise 1x1 from {conv.pointwise.in_channels} to {conv.pointwise.out_channels} channels"


def _as_separable(dense: nn.Conv2d) -> str:
    """What the depthwise separable form of a dense k x k conv would cost, as a share of it."""
    out, k = dense.out_channels, dense.kernel_size[0]
    return f"as a depthwise separable conv (separable=True) it would need 1/C_out + 1/k² = 1/{out} + 1/{k * k} = {separable_cost_ratio(out, k):.3f} of its weights and multiply-adds"
