"""The four architectures: each declares what it needs from its encoder and builds its
decoder (:mod:`segmodels.decoders`) and heads; :class:`SegmentationModel` runs them.
Registration order is the display order."""

from __future__ import annotations

from collections.abc import Sequence

from ..blocks import SegmentationHead
from ..decoders import Decoder, DeepLabV3PlusDecoder, UNet3PlusDecoder, UNetDecoder, UNetPlusPlusDecoder
from ..encoders import Encoder, EncoderRequirements, PlainEncoder
from .base import SegmentationModel
from .registry import register_architecture


def default_decoder_channels(encoder: Encoder) -> list[int]:
    """The U-Net paper's symmetric widths for the plain encoder, (32, 64, 128, 256) otherwise."""
    if isinstance(encoder, PlainEncoder):
        return list(encoder.out_channels[:-1])
    return [32 * 2**i for i in range(len(encoder.out_channels) - 1)]


def segmentation_heads(decoder: Decoder, num_classes: int, deep_supervision: bool, kernel_size: int = 1) -> dict[str, SegmentationHead]:
    """A head on the decoder's main output, and with ``deep_supervision`` on every other one."""
    names = list(decoder.out_channels)[: None if deep_supervision else 1]
    return {name: SegmentationHead(decoder.out_channels[name], num_classes, kernel_size) for name in names}


@register_architecture("unet", "U-Net")
class UNet(SegmentationModel):
    """U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): a contracting path (the encoder)
    and a symmetric expansive path that upsamples, concatenates the skip feature of the same
    scale and refines it (:class:`~segmodels.decoders.UNetDecoder`), then a 1x1 head.

    With the ``plain`` encoder at ``base_channels=64`` and 2 classes this is the paper's
    network with padded convolutions and batch norm: 31.04M parameters (7.76M at base 32).

    Args:
        encoder: an undilated encoder.
        num_classes: output classes.
        decoder_channels: width of each decoder stage, shallow to deep (one per skip).
            Defaults to the encoder's skip widths (the paper's symmetric design) for the plain
            encoder and to (32, 64, 128, 256) for pretrained encoders.
        upsampling: ``bilinear`` (default) or ``transposed``.
    """

    encoder_requirements = EncoderRequirements(undilated=True)

    def __init__(self, encoder: Encoder, num_classes: int, decoder_channels: Sequence[int] | None = None, upsampling: str = "bilinear"):
        self.encoder_requirements.check(encoder, type(self).__name__)
        decoder = UNetDecoder(encoder.out_channels, decoder_channels or default_decoder_channels(encoder), upsampling)
        super().__init__(encoder, decoder, segmentation_heads(decoder, num_classes, deep_supervision=False))
        self.accept_legacy_keys({"blocks.": "decoder.blocks.", "head.": "heads.main."})


@register_architecture("unetpp", "U-Net++")
class UNetPlusPlus(SegmentationModel):
    """U-Net++ (Zhou, Siddiquee, Tajbakhsh & Liang, DLMIA 2018; IEEE TMI 2019): nested decoder
    nodes X(i, j) joined by dense skip connections (:class:`~segmodels.decoders.UNetPlusPlusDecoder`),
    with a 1x1 head on each of X(0, 1)..X(0, 4) for deep supervision (TMI Sec. III-B);
    training averages their losses.

    Pruning (Sec. III-C): at depth ``d`` in :attr:`pruning_depths` (1..4) the output is X(0, d)
    and only what it needs runs (the encoder up to level d, the nodes with i + j <= d), so a
    pruned network is genuinely smaller and faster. Choose it per call (``model(x, depth=2)``)
    or with the ``depth`` option / attribute.

    With the ``plain`` encoder at ``base_channels=32``, 2 classes and the official
    implementation's 2x2 transposed-conv upsampling it has 9.046M parameters, the 9.04M the
    paper reports to 0.1%: batch norm's two parameters per channel replace the official
    convolutions' bias (+3.6k). ``upsampling="bilinear"`` (the variant the shipped weights
    were trained with) has 9.16M.

    Args:
        encoder: an undilated encoder.
        num_classes: output classes.
        decoder_channels: width of the nodes of each level, shallow to deep (defaults as U-Net).
        deep_supervision: heads on X(0, 1)..X(0, 3) as well as X(0, 4); without them the
            model cannot be pruned.
        upsampling: ``transposed`` (default, official) or ``bilinear``.
        depth: default pruning depth at inference (None: full depth).
    """

    encoder_requirements = EncoderRequirements(undilated=True)

    def __init__(
        self,
        encoder: Encoder,
        num_classes: int,
        decoder_channels: Sequence[int] | None = None,
        deep_supervision: bool = True,
        upsampling: str = "transposed",
        depth: int | None = None,
    ):
        self.encoder_requirements.check(encoder, type(self).__name__)
        decoder = UNetPlusPlusDecoder(encoder.out_channels, decoder_channels or default_decoder_channels(encoder), upsampling)
        pruning_depths = tuple(range(1, decoder.max_depth + 1)) if deep_supervision else ()
        super().__init__(encoder, decoder, segmentation_heads(decoder, num_classes, deep_supervision), pruning_depths, depth)
        self.accept_legacy_keys({"nodes.": "decoder.nodes."})

    @property
    def max_depth(self) -> int:
        """The deepest level of the nested decoder (the full network)."""
        return self.decoder.max_depth


@register_architecture("unet3p", "U-Net 3+")
class UNet3Plus(SegmentationModel):
    """U-Net 3+ (Huang et al., ICASSP 2020): every decoder stage gathers all encoder scales at
    and above it and all deeper decoder stages (full-scale skip connections, Sec. 2.1,
    :class:`~segmodels.decoders.UNet3PlusDecoder`), with full-scale deep supervision: a 3x3
    head on each decoder stage and on the deepest encoder feature, each upsampled to the
    input (Sec. 2.2). Training averages the heads' losses.

    The paper's classification-guided module (Sec. 2.3) filters false positives in binary
    organ segmentation; for multi-class scenes it is not used here.

    With the ``plain`` encoder at ``base_channels=64`` and 2 classes: 27.00M parameters with
    the deep-supervision heads and 26.97M without them, the paper's figure (Table 1; our
    convolutions drop the bias that batch norm makes redundant).

    Args:
        encoder: any encoder.
        num_classes: output classes.
        cat_channels: width each scale is squeezed to before concatenation (64 in the paper).
        deep_supervision: add the side heads used for training.
    """

    def __init__(self, encoder: Encoder, num_classes: int, cat_channels: int = 64, deep_supervision: bool = True):
        self.encoder_requirements.check(encoder, type(self).__name__)
        decoder = UNet3PlusDecoder(encoder.out_channels, encoder.reductions, cat_channels)
        super().__init__(encoder, decoder, segmentation_heads(decoder, num_classes, deep_supervision, kernel_size=3))
        side_heads = {f"side_heads.{k}.": f"heads.{name}." for k, name in enumerate(list(decoder.out_channels)[1:])}
        self.accept_legacy_keys({"stages.": "decoder.stages.", "head.": "heads.x_de1.", **side_heads})


@register_architecture("deeplabv3p", "DeepLabV3+")
class DeepLabV3Plus(SegmentationModel):
    """DeepLabV3+ (Chen, Zhu, Papandreou, Schroff & Adam, ECCV 2018): an encoder run at output
    stride 16 (or 8) with atrous convolution in its last stage(s), ASPP on its deepest
    feature and a decoder that refines it with the stride-4 feature
    (:class:`~segmodels.decoders.DeepLabV3PlusDecoder`), then a 1x1 head; the logits are
    upsampled 4x to the input.

    Args:
        encoder: an encoder built at ``output_stride`` with a stride-4 feature
            (``create_model`` builds it so).
        num_classes: output classes.
        output_stride: 16 (ASPP rates 6, 12, 18) or 8 (rates doubled).
        aspp_channels: width of ASPP and the decoder (256 in the paper).
        low_level_channels: width of the projected low-level feature (48 in the paper).
        separable: depthwise separable 3x3 convs in ASPP and the decoder, as published
            (default), or dense ones (``False``: the shipped weights were trained so).
    """

    encoder_requirements = EncoderRequirements(output_strides=(16, 8), feature_strides=(4,))

    def __init__(self, encoder: Encoder, num_classes: int, output_stride: int = 16, aspp_channels: int = 256, low_level_channels: int = 48, separable: bool = True):
        self.encoder_requirements.check(encoder, type(self).__name__, output_stride)
        decoder = DeepLabV3PlusDecoder(encoder.out_channels, encoder.reductions, output_stride, aspp_channels, low_level_channels, separable)
        super().__init__(encoder, decoder, segmentation_heads(decoder, num_classes, deep_supervision=False))
        self.accept_legacy_keys({"aspp.": "decoder.aspp.", "low_level_project.": "decoder.low_level_project.", "refine.": "decoder.refine.", "head.": "heads.main."})
