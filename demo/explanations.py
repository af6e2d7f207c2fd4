"""The explanations whose numbers the code can compute, rendered from the code (issue 13's
corrections): receptive-field arithmetic, dilation, SPP and ASPP, DeepLabV3+'s real pipeline,
U-Net 3+'s full-scale skips, U-Net's padded convolutions, the class-weighting schemes, the
losses with weighted focal, and the mIoU of an image against that of a dataset. Every figure
below comes from :mod:`segmodels` (its modules, defaults and :mod:`segmodels.teaching`), so a
change in the library changes the text."""

from __future__ import annotations

import inspect
from fractions import Fraction

from segmodels.blocks import SPP
from segmodels.decoders.deeplabv3p import DeepLabV3PlusDecoder
from segmodels.decoders.unet3p import UNet3PlusDecoder
from segmodels.teaching import (
    RECEPTIVE_FIELD_EXAMPLE,
    aspp_branch_extents,
    aspp_rates_by_output_stride,
    dilated_kernel_extent,
    miou_worked_example,
    receptive_field_steps,
    stacked_conv_receptive_field,
    unet_valid_output_size,
)


def _default(cls, name: str):
    return inspect.signature(cls.__init__).parameters[name].default


def receptive_field() -> str:
    """n stacked 3x3 convolutions, dilation, and how a stride multiplies every later step."""
    sizes = ", ".join(f"{n} see {stacked_conv_receptive_field(n)} x {stacked_conv_receptive_field(n)}" for n in (1, 2, 3, 4))
    rows = ["| layer | kernel | stride | dilation | steps over (jump) | grows by | receptive field |", "|---|---|---|---|---|---|---|"]
    rows += [f"| {s['layer']} | {s['kernel']}x{s['kernel']} | {s['stride']} | {s['dilation']} | {s['jump_in']} px | +{s['growth']} | **{s['receptive_field']} px** |" for s in receptive_field_steps(RECEPTIVE_FIELD_EXAMPLE)]
    extents = ", ".join(f"rate {r}: {dilated_kernel_extent(3, r)} x {dilated_kernel_extent(3, r)}" for r in (1, 2, 4))
    return f"""\
**The arithmetic.** A k x k convolution with stride 1 adds k - 1 pixels to the receptive field, so
n stacked 3x3 convolutions see **2n + 1** pixels: {sizes}. (Two 3x3 layers see 5 x 5, not 7 x 7
as some introductions say; that is three.) A stride multiplies every *later* step: after a stride-2
layer each 3x3 convolution steps over 2 input pixels and adds 4, after two such layers 8.

{chr(10).join(rows)}

A 3x3 kernel **dilated** at rate r spans r(k - 1) + 1 pixels with the same 9 weights: {extents}.
"""


def pooling() -> str:
    """Why SPP exists, and ASPP as its atrous, same-resolution descendant."""
    bins = SPP().bins
    rates = aspp_rates_by_output_stride()
    extents16 = ", ".join(f"{e['rate']} ({e['outer_taps_input_pixels']} input px between its outer taps)" for e in aspp_branch_extents(16))
    cells = sum(b * b for b in bins)
    return f"""\
**SPP** (spatial pyramid pooling, He et al. 2014) was made for classification networks with fully
connected layers, which need a fixed-length input: it max-pools a feature map of *any* size into
{", ".join(f"{b}x{b}" for b in bins)} grids, {cells} cells per channel whatever the image size. No model here uses
it. **ASPP** (atrous SPP, DeepLabV3) is its descendant for segmentation: instead of pooling into
coarse bins it runs parallel 3x3 convolutions *dilated* at rates {", ".join(map(str, rates[16]))} (at output stride 16;
{", ".join(map(str, rates[8]))} at output stride 8) plus a 1x1 convolution and global image pooling, all at the same
resolution, so every pixel gets context at several scales. At output stride 16 the rates are {extents16}.
"""


def deeplab_pipeline() -> str:
    """DeepLabV3+ as it really runs: the encoder still downsamples 16x (or 8x)."""
    rates = aspp_rates_by_output_stride()
    aspp_width = _default(DeepLabV3PlusDecoder, "aspp_channels")
    low_level = _default(DeepLabV3PlusDecoder, "low_level_channels")
    return f"""\
**DeepLabV3+ step by step** (Chen et al. 2018). It *does* shrink the feature map: the encoder
downsamples to **output stride 16** (or 8); only its last stage replaces striding by atrous
convolution, so the deepest features stay at 1/16 instead of 1/32. Then **ASPP**: a 1x1
convolution, three 3x3 convolutions at rates {", ".join(map(str, rates[16]))} (doubled to {", ".join(map(str, rates[8]))} at output stride 8), and
image pooling, concatenated and projected by a 1x1 convolution to {aspp_width} channels. The
**decoder** reduces the stride-4 low-level features to **{low_level} channels**, upsamples the ASPP
output x4 to meet them, concatenates, refines with two 3x3 convolutions and upsamples x4 to the
input.
"""


def unet3p_skips(levels: int = 5) -> str:
    """Full-scale skips: five scales of 64 channels fused into 320 by one 3x3 convolution."""
    cat = _default(UNet3PlusDecoder, "cat_channels")
    return f"""\
**U-Net 3+ in detail** (Huang et al. 2020). Each decoder stage gathers **all {levels} scales**: the
shallower encoder features max-pooled down to its size, the same-scale encoder feature, and the
deeper decoder stages upsampled to it; each is squeezed to {cat} channels by a 3x3 convolution and the
{levels} x {cat} = **{levels * cat} channels** are fused by one more 3x3 convolution. **Full-scale deep
supervision** puts a segmentation head on every decoder stage during training. The paper's
**classification-guided module** (a small classifier that says whether the organ is in the image at
all, and suppresses the masks when it is not) is **not included** here: it was designed for one
organ in medical images, not for street scenes where every class can be present at once.
"""


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
