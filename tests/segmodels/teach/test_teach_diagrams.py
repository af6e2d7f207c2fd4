"""The drawing of each architecture's graph (what the Inside-the-network tab plots): every node's
(row, column) for the tiny plain-encoder models, pinned so that moving the diagrams out of the
decoders cannot move a box. Rows grow with depth; heads sit 0.8 rows above the node they read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import TINY_OPTIONS
from segmodels import SegmentationModel, create_encoder, create_model
from segmodels.blocks import SegmentationHead
from segmodels.decoders import Decoder
from segmodels.teach.network_graph import network_graph

ENCODER = {f"x{i}_0": (i, i) for i in range(5)}
POSITIONS = {
    "unet": ENCODER | {"x3_1": (3, 5), "x2_2": (2, 6), "x1_3": (1, 7), "x0_4": (0, 8), "head.main": (-0.8, 8)},
    "unetpp": ENCODER | {f"x{i}_{j}": (i, i + 2 * j) for j in range(1, 5) for i in range(5 - j)} | {f"head.x0_{j}": (-0.8, 2 * j) for j in (4, 1, 2, 3)},
    "unet3p": ENCODER
    | {"x_de4": (3, 5), "x_de3": (2, 6), "x_de2": (1, 7), "x_de1": (0, 8)}
    | {"head.x_de1": (-0.8, 8), "head.x_de2": (0.2, 7), "head.x_de3": (1.2, 6), "head.x_de4": (2.2, 5), "head.x_de5": (3.2, 4)},
    "deeplabv3p": ENCODER
    | {f"aspp.branches.{k}": (2 + k, 5.5) for k in range(5)}
    | {"aspp.project": (4, 7), "low_level_project": (2, 7), "refine.0": (2, 8.3), "refine.1": (2, 9.6), "head.main": (1.2, 9.6)},
}


@pytest.mark.parametrize("arch", TINY_OPTIONS)
def test_every_node_keeps_its_place(arch):
    torch.manual_seed(0)
    model = create_model(arch, 4, encoder="plain", pretrained=False, base_channels=4, **TINY_OPTIONS[arch]).eval()
    graph = network_graph(model)
    drawn = {node.name: (node.row, node.column) for node in graph.nodes}
    assert list(drawn) == list(POSITIONS[arch])
    for name, (row, column) in POSITIONS[arch].items():
        assert drawn[name] == pytest.approx((row, column)), name


class Undeclared(Decoder):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(16, 8, 1)
        self.out_channels = {"main": 8}

    def forward(self, features):
        return {"main": self.conv(features[-1])}


def test_a_decoder_without_a_diagram_is_named():
    encoder = create_encoder("plain", base_channels=1, num_stages=4)
    undeclared = SegmentationModel(encoder, Undeclared(), {"main": SegmentationHead(8, 2)}).eval()
    with pytest.raises(ValueError, match="Undeclared has no diagram"):
        network_graph(undeclared)
