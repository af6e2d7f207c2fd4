"""The explanations whose numbers the code can compute, rendered from the code: receptive-field
arithmetic, dilation and what it costs, SPP, PSPNet's pyramid pooling and ASPP, DeepLabV3+'s
real pipeline and its atrous separable convolution, U-Net's up-convolution, U-Net++'s two
inference modes, U-Net 3+'s full-scale skips, the four CamVid models' shared encoder, U-Net's
padded convolutions, the losses, and the mIoU of an image against that of a dataset. Every
figure below comes from :mod:`segmodels` (its modules, the shipped models' cards and modules,
:mod:`segmodels.teach.numbers` and :mod:`segmodels.teach.architecture`), so a change in the
library or in a shipped model changes the text; each text says what the paper uses and what
the shipped model runs."""

from __future__ import annotations

import inspect
import math
from fractions import Fraction
from pathlib import Path

from segmodels.decoders.deeplabv3p import DeepLabV3PlusDecoder
from segmodels.decoders.unet3p import UNet3PlusDecoder
from segmodels.teach.architecture import (
    ModelFacts,
    encoder_level_flops,
    encoder_reductions,
    gridding_coverage,
    separable_cost,
    shipped_facts,
    valid_tap_share,
)
from segmodels.teach.feature_maps import STRETCH_QUANTILES
from segmodels.teach.losslab import LOSS_LABELS
from segmodels.teach.numbers import (
    RECEPTIVE_FIELD_EXAMPLE,
    aspp_branch_extents,
    aspp_rates_by_output_stride,
    dilated_kernel_extent,
    miou_worked_example,
    receptive_field_steps,
    stacked_conv_receptive_field,
    unet_valid_output_size,
)
from segmodels.teach.pooling import PSP_BINS, SPP

SHOWN_SET = "camvid"  # the set whose shipped models the explanations read
NOT_SHIPPED = "*(no shipped CamVid {name} to read what runs here)*"


def _default(cls, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


# The papers' widths are the library's defaults (U-Net 3+ Sec. 2.1; DeepLabV3+ Sec. 4.1).
PAPER = {
    "unet3p_cat": _default(UNet3PlusDecoder, "cat_channels"),
    "aspp": _default(DeepLabV3PlusDecoder, "aspp_channels"),
    "low_level": _default(DeepLabV3PlusDecoder, "low_level_channels"),
}


def _m(count: int) -> str:
    return f"{count / 1e6:.2f}M"


def _g(flops: int) -> str:
    return f"{flops / 1e9:.2f}"


def receptive_field() -> str:
    """n stacked 3x3 convolutions, dilation, and how a stride multiplies every later step."""
    one = stacked_conv_receptive_field(1)
    sizes = ", ".join(f"{word} see {stacked_conv_receptive_field(n)} x {stacked_conv_receptive_field(n)}" for n, word in ((2, "two"), (3, "three"), (4, "four")))
    rows = ["| layer | kernel | stride | dilation | steps over (jump) | grows by | receptive field |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {s['layer']} | {s['kernel']}x{s['kernel']} | {s['stride']} | {s['dilation']} | {s['jump_in']} px | +{s['growth']} | **{s['receptive_field']} px** |"
             for s in receptive_field_steps(RECEPTIVE_FIELD_EXAMPLE)]
    extents = ", ".join(f"rate {r}: {dilated_kernel_extent(3, r)} x {dilated_kernel_extent(3, r)}" for r in (1, 2, 4))
    return f"""\
**The arithmetic.** A k x k convolution with stride 1 adds k - 1 pixels to the receptive field, so
n stacked 3x3 convolutions see **2n + 1** pixels: one sees {one} x {one}, {sizes}. (Two 3x3 layers see
5 x 5, not 7 x 7 as some introductions say; that is three.) A stride multiplies every *later* step:
after a stride-2 layer each 3x3 convolution steps over 2 input pixels and adds 4, after two such layers 8.

{chr(10).join(rows)}

A 3x3 kernel **dilated** at rate r spans r(k - 1) + 1 pixels with the same 9 weights: {extents}.

The sizes in the chart and the table are **about** right for any one pixel: they are computed layer
by layer, while a real output pixel's field depends a little on where it falls on the strided grids
(and bilinear upsampling reads two neighbours), so it differs slightly from pixel to pixel.
"""


def pooling() -> str:
    """SPP, PSPNet's pyramid pooling and ASPP: three ways to gather context at several scales."""
    bins = SPP().bins
    rates = aspp_rates_by_output_stride()
    extents16 = ", ".join(f"{e['rate']} ({e['outer_taps_input_pixels']} input px between its outer taps)" for e in aspp_branch_extents(16))
    cells = sum(b * b for b in bins)
    return f"""\
**SPP** (spatial pyramid pooling, He et al. 2014) was made for classification networks with fully
connected layers, which need a fixed-length input: it max-pools a feature map of *any* size into
{", ".join(f"{b}x{b}" for b in bins)} grids, {cells} cells per channel whatever the image size. No model here uses it.

**PSPNet's pyramid pooling module** (Zhao et al. 2017) is SPP as segmentation uses it: it
average-pools the feature map into {", ".join(f"{b}x{b}" for b in PSP_BINS)} bins, reduces each pooled map to 1/{len(PSP_BINS)} of
the channels with a 1x1 convolution, upsamples them bilinearly back to the map's size and
concatenates them with the map itself, so every pixel carries its own features plus a summary of its
region and of the whole image (`segmodels.teach.pooling.PyramidPoolingModule`; no shipped model uses it).

**ASPP** (atrous SPP) comes from **DeepLab v2** (Chen et al., TPAMI 2017): parallel 3x3
convolutions *dilated* at several rates on the same map, all at the same resolution. **DeepLabV3**
revised it into the form DeepLabV3+ and the models here use: a 1x1 convolution, three 3x3
convolutions at rates {", ".join(map(str, rates[16]))} (at output stride 16; {", ".join(map(str, rates[8]))} at output stride 8) and global
image pooling, concatenated and projected by a 1x1 convolution. At output stride 16 the rates are {extents16}.
"""


def _stride_text(reductions: tuple[int, ...]) -> str:
    return ", ".join(map(str, reductions))


def _dilated_levels(reductions: tuple[int, ...]) -> int:
    return sum(1 for shallow, deep in zip(reductions, reductions[1:]) if deep == shallow)


def dilation_cost(facts: ModelFacts | None) -> str:
    """What dilation costs (the shipped DeepLabV3+'s encoder at output stride 16 against 32),
    why large rates degenerate on small maps (DeepLabV3 Sec. 3.3) and gridding (Wang et al. 2018)."""
    if facts is None or facts.card is None:
        return "**Dilation is not free.** " + NOT_SHIPPED.format(name="DeepLabV3+")
    if not facts.dilated_convs:
        return f"**Dilation is not free**, but the shipped {facts.arch_display}'s {facts.encoder_display} encoder has no dilated convolution to measure."
    height, width = facts.card.get("flops_input_size") or (360, 480)
    os_ = facts.output_stride
    dilated = encoder_level_flops(facts.encoder, (height, width), os_)
    strided = encoder_level_flops(facts.encoder, (height, width), None)
    own = encoder_reductions(facts.encoder, os_)
    natural = encoder_reductions(facts.encoder, None)
    levels = _dilated_levels(own)
    changed = slice(len(own) - levels, len(own))
    map_h, map_w = math.ceil(height / os_), math.ceil(width / os_)
    rates = aspp_rates_by_output_stride()[os_]
    taps = {rate: valid_tap_share(map_h, map_w, rate) for rate in rates}
    largest = max(rates)
    tap_rows = ", ".join(f"rate {rate}: {taps[rate]['padding_share']:.0%}" for rate in rates)
    convs = facts.dilated_convs
    kernels = ", ".join(f"{k}x{k}" for _, k, _ in convs)
    alone = gridding_coverage([(k, d) for _, k, d in convs])
    before = facts.before_dilated()
    filled = gridding_coverage([(before[1], before[2])] + [(k, d) for _, k, d in convs]) if before else alone
    hdc = gridding_coverage([(3, 1), (3, 2), (3, 3)])
    same = gridding_coverage([(3, 2)] * 3)
    return f"""\
**Dilation is not free.** A dilated convolution has the weights of its undilated self, but it runs
on a map that was *not* downsampled. The shipped {facts.arch_display} runs {facts.encoder_display} at
output stride {os_} (feature strides {_stride_text(own)}; the U-Nets run it at {_stride_text(natural)}), so its
{"last level keeps" if levels == 1 else f"last {levels} levels keep"} a stride-{os_} map instead of halving it. On a {height} x {width} frame
{"that level costs" if levels == 1 else "those levels cost"} **{_g(sum(dilated[changed]))} GFLOPs** against **{_g(sum(strided[changed]))}** at output stride {max(natural)}
({sum(dilated[changed]) / sum(strided[changed]):.1f}x: after the level's first convolution it computes {(max(natural) // os_) ** 2}x as many positions), out of
{_g(sum(dilated))} against {_g(sum(strided))} GFLOPs for the whole encoder (`segmodels.teach.architecture.encoder_level_flops`;
the Inside tab shows the same per node).

**Large rates on small maps.** That frame's stride-{os_} map is {map_h} x {map_w}. A tap {largest} positions from
the centre is off the map for most positions, where it reads the zero padding: on average the share
of ASPP's taps that read padding is {tap_rows}, and at {taps[largest]['centre_only_share']:.0%} of the
positions the rate-{largest} branch has only its centre tap on the map, a 1x1 convolution there. This is
why DeepLabV3 (Chen et al. 2017, Sec. 3.3) added the global image-pooling branch for the context that
large rates no longer deliver.

**Gridding** (Wang et al. 2018, "Understanding Convolution for Semantic Segmentation"): stacked
convolutions of one rate r > 1 only ever combine inputs r pixels apart, a checkerboard; three 3x3
layers at rate 2 reach {same:.0%} of the positions in their span, so neighbouring outputs are computed
from disjoint sets of inputs. Their fix, hybrid dilated convolution, uses rates without a common
factor, such as 1, 2, 3 ({hdc:.0%}). In the shipped encoder {len(convs)} convolutions ({kernels}) run at
rate {convs[0][2]} one after the other (read from its modules): alone they reach {alone:.0%} of their span;
{f"the undilated {before[1]}x{before[1]} convolution just before them fills the gaps ({filled:.0%})" if before else "nothing before them fills the gaps"}.
"""


def deeplab_pipeline(facts: ModelFacts | None) -> str:
    """DeepLabV3+ as it really runs: the encoder still downsamples 16x (or 8x); the paper's
    widths against the shipped model's."""
    rates = aspp_rates_by_output_stride()
    if facts is None:
        runs = NOT_SHIPPED.format(name="DeepLabV3+")
        levels16 = levels8 = None
    else:
        runs = (
            f"The shipped CamVid model uses **{facts.widths['aspp_channels']} channels** for ASPP and the decoder and "
            f"**{facts.widths['low_level_channels']}** for the low-level features (read from its layers)."
        )
        levels16 = _dilated_levels(encoder_reductions(facts.encoder, 16))
        levels8 = _dilated_levels(encoder_reductions(facts.encoder, 8))
    dilated = (
        f"at output stride 16 only its last level replaces striding by atrous convolution, at output stride 8 its last {levels8} levels"
        if levels16 == 1 else "its last stage(s) replace striding by atrous convolution"
    )
    upsampled = f"upsampled x{facts.logit_upsampling} (bilinear)" if facts else "upsampled bilinearly"
    return f"""\
**DeepLabV3+ step by step** (Chen et al. 2018). It *does* shrink the feature map: the encoder
downsamples to **output stride 16** (or 8); {dilated}, so the deepest features stay at 1/16 (or
1/8) instead of 1/32. Then **ASPP**: a 1x1 convolution, three 3x3 convolutions at rates {", ".join(map(str, rates[16]))} (doubled
to {", ".join(map(str, rates[8]))} at output stride 8) and image pooling, concatenated and projected by a 1x1 convolution.
The **decoder** reduces the stride-4 low-level features by a 1x1 convolution, upsamples the ASPP
output x4 to meet them, concatenates and refines with two 3x3 convolutions; a 1x1 head gives the
class scores at stride 4, {upsampled} to the input. The paper uses **{PAPER['aspp']} channels** for
ASPP and the decoder and **{PAPER['low_level']}** for the low-level features. {runs}
"""


def separable_convolution(facts: ModelFacts | None) -> str:
    """DeepLabV3+'s atrous separable convolution: depthwise + pointwise, and what it saves."""
    paper = separable_cost(PAPER["aspp"] + PAPER["low_level"], PAPER["aspp"])
    if facts is None:
        shipped = NOT_SHIPPED.format(name="DeepLabV3+")
    else:
        width, low = facts.widths["aspp_channels"], facts.widths["low_level_channels"]
        cost = separable_cost(width + low, width)
        form = (f"separable ({facts.decoder_depthwise_convs} depthwise convolutions in its decoder)" if facts.decoder_depthwise_convs
                else "dense 3x3 convolutions there (no depthwise convolution in its decoder)")
        shipped = (
            f"For the shipped model's first refining convolution ({width + low} -> {width} channels) the separable form would cost "
            f"{cost['separable']:,} instead of {cost['dense']:,} per pixel ({cost['ratio']:.3f}). The shipped CamVid DeepLabV3+ uses {form}, read from its modules."
        )
    return f"""\
**Atrous separable convolution** (DeepLabV3+, Sec. 3.2). The paper splits each 3x3 convolution of
ASPP and the decoder into a **depthwise** 3x3 convolution (one filter per input channel, dilated at
the branch's rate) and a **pointwise** 1x1 convolution that mixes the channels. Per output pixel a
dense k x k convolution from C_in to C_out channels costs k² C_in C_out multiply-adds, the separable
one k² C_in + C_in C_out: a ratio of **1/C_out + 1/k²**. For the paper's first refining convolution
({PAPER['aspp'] + PAPER['low_level']} -> {PAPER['aspp']} channels) that is {paper['separable']:,} instead of {paper['dense']:,}, {paper['ratio']:.3f} of the cost. {shipped}
"""


def upsampling(facts: dict[str, ModelFacts]) -> str:
    """U-Net's learned up-convolution against interpolation, and the final logit upsampling."""
    modes = {"bilinear": "bilinear interpolation followed by a learned 2x2 convolution", "transposed": "a learned 2x2 transposed convolution of stride 2"}
    used = "; ".join(f"{f.arch_display}: {modes.get(f.upsampling, f.upsampling)}" for f in facts.values() if f.upsampling)
    final = ", ".join(f"{f.arch_display} x{f.logit_upsampling}" for f in facts.values())
    return f"""\
**Upsampling.** The U-Net paper doubles the resolution with an **up-convolution**: "an upsampling of
the feature map followed by a 2x2 convolution" that halves the channels, so the upsampling is learned
(common implementations, U-Net++'s official one among them, use a 2x2 transposed convolution of stride 2);
many later models interpolate bilinearly and let the following 3x3 convolutions do the learning, as
U-Net 3+ and DeepLabV3+ here do. The shipped CamVid models read from their modules: {used or "none shipped"}.
Every model's head gives class scores at a fraction of the input's size, **upsampled bilinearly** to the
padded input and cropped back to the image: {final or "none shipped"}.
"""


def unetpp_modes() -> str:
    """U-Net++'s fast and accurate inference modes (Zhou et al. 2018, Sec. 2)."""
    return """\
**U-Net++'s two inference modes** (Zhou et al. 2018). Deep supervision gives one segmentation per
output node X(0,1) ... X(0,4). In **accurate mode** the outputs of all branches are averaged; in
**fast mode** the segmentation is taken from one branch only, which decides how much of the network
can be pruned. The models here use fast mode: the chosen depth's node alone (the pruning tab);
averaging the branches is not offered.
"""


def unet3p_skips(facts: ModelFacts | None, levels: int = 5) -> str:
    """Full-scale skips: the paper's five scales of 64 channels against the shipped widths;
    the paper's hybrid loss, which the models here do not use."""
    cat = PAPER["unet3p_cat"]
    if facts is None:
        runs, loss = NOT_SHIPPED.format(name="U-Net 3+"), "another loss"
    else:
        w = facts.widths
        runs = f"The shipped CamVid model squeezes to **{w['cat_channels']}**: {w['levels']} x {w['cat_channels']} = **{w['fused_channels']} channels** (read from its layers)."
        name = (facts.card.get("training") or {}).get("loss", "its training loss")
        loss = LOSS_LABELS.get(name, name) + " averaged over the heads"
    return f"""\
**U-Net 3+ in detail** (Huang et al. 2020). Each decoder stage gathers **all {levels} scales**: the
shallower encoder features max-pooled down to its size, the same-scale encoder feature, and the
deeper decoder stages upsampled to it; each is squeezed by a 3x3 convolution and the results are
fused by one more 3x3 convolution. The paper squeezes each to {cat} channels, {levels} x {cat} = **{levels * cat} channels**.
{runs} **Full-scale deep supervision** puts a segmentation head on every decoder stage during
training; the paper trains each with a **hybrid loss**, focal + MS-SSIM + IoU, which the models here
do not use (they are trained with {loss}). The paper's **classification-guided module** (a small
classifier that says whether the organ is in the image at all, and suppresses the masks when it is
not) is **not included** either: it was designed for one organ in medical images, not for street
scenes where every class can be present at once.
"""


def shared_encoder(facts: dict[str, ModelFacts]) -> str:
    """The key fact for reading the Compare table: one encoder, matched decoders."""
    if not facts:
        return "**The four CamVid models.** " + NOT_SHIPPED.format(name="model")
    encoders = {(f.encoder_display, f.encoder_parameters, bool(f.card and (f.card.get("training") or {}).get("pretrained"))) for f in facts.values()}
    decoders = ", ".join(f"{f.arch_display} {_m(f.decoder_parameters)}" for f in facts.values())
    sizes = [f.decoder_parameters for f in facts.values()]
    if len(encoders) != 1:
        return f"**The CamVid models** use different encoders ({', '.join(sorted(e[0] for e in encoders))}); their decoders have {decoders} parameters."
    (name, count, pretrained), = encoders
    start = "the same ImageNet-pretrained" if pretrained else "the same"
    return f"""\
**Reading the comparison.** The {len(facts)} CamVid models start from {start} **{name}** encoder
({_m(count)} parameters, fine-tuned separately with each model) and have decoders matched in size,
{_m(min(sizes))}-{_m(max(sizes))} parameters ({decoders}; heads excluded; read from the models). So
the table compares decoder designs at equal size, not encoders or model sizes.
"""


def inside_thumbnails() -> str:
    """How the Inside tab's thumbnails are scaled."""
    low, high = STRETCH_QUANTILES
    return (
        f"Each thumbnail is **contrast-stretched on its own**: the {low:.0%} and {high:.0%} quantiles of that node's map "
        "become black and white, so brightness compares places within one node, not one node with another."
    )


def unet_padding(paper_input: int = 572) -> str:
    """The models here use padded convolutions and batch norm; the paper did not."""
    output = unet_valid_output_size(paper_input)
    return f"""\
**U-Net as implemented here.** The paper used *valid* (unpadded) convolutions: every 3x3 layer trims
a pixel on each side, so a {paper_input} x {paper_input} input gives a {output} x {output} output and the skip features
must be *cropped* to fit; large images were segmented tile by tile with overlap. The models here use
**padded** convolutions (output size = input size, no cropping) and **batch normalisation** after
each convolution (not in the paper), which trains faster and lets one pass segment a whole image;
the price is that pixels at the border see zero padding instead of real context.
"""


def architectures(weights_dir: str | Path) -> str:
    """The Compare tab's explanations, read from the shipped CamVid models in ``weights_dir``."""
    facts = shipped_facts(SHOWN_SET, weights_dir)
    return "\n".join((
        shared_encoder(facts),
        unet_padding(),
        upsampling(facts),
        unetpp_modes(),
        unet3p_skips(facts.get("unet3p")),
        deeplab_pipeline(facts.get("deeplabv3p")),
        separable_convolution(facts.get("deeplabv3p")),
        miou_image_vs_dataset(),
    ))


def context(weights_dir: str | Path) -> str:
    """The Receptive-field tab's explanations: the arithmetic, pooling, what dilation costs."""
    return "\n".join((receptive_field(), pooling(), dilation_cost(shipped_facts(SHOWN_SET, weights_dir).get("deeplabv3p"))))


def weighted_losses() -> str:
    """The five losses side by side, weighted focal included."""
    return r"""
| loss | per-pixel formula (p_t = predicted probability of the true class) |
|---|---|
| cross-entropy (CE) | $-\log p_t$ |
| weighted CE | $-w_t \log p_t$ with $w_c = \frac{N - N_c}{N}$ or median frequency $w_c = \frac{\mathrm{median}(f)}{f_c}$ |
| focal ($\gamma = 2$) | $-(1 - p_t)^{\gamma} \log p_t$ |
| weighted focal | $-w_t (1 - p_t)^{\gamma} \log p_t$ |
"""


def miou_image_vs_dataset() -> str:
    """The worked example: averaging images' mIoU against one confusion matrix."""
    example = miou_worked_example()
    images = example["images"]
    per_image = ", ".join(f"image {i + 1}: {Fraction(image['miou_exact'])}" for i, image in enumerate(images))
    mean = Fraction(example["mean_of_image_mious_exact"])
    dataset = Fraction(example["dataset_miou_exact"])
    return f"""\
**mIoU of one image vs of a dataset.** A dataset's mIoU is computed from **one confusion matrix
summed over every pixel of the split**, not by averaging the images' mIoUs. In this tiny example
({len(images)} images, classes {" and ".join(example["class_names"])}) one object pixel is missed in image 1 and images 2
and 3 have no object: per image, {per_image}, mean **{mean} = {float(mean):.3f}**; over the
whole set, **{dataset} = {float(dataset):.3f}**. An image without the object simply leaves that class
out of its average (and scores perfectly), while the dataset's matrix keeps every missed object
pixel in the object's IoU. The model cards' *val mIoU* is the dataset kind; *mIoU (this image)* the image kind.
"""
