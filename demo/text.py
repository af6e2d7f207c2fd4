"""Classroom explanations shown in the tabs (Markdown)."""

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

INTRO = """\
# Semantic segmentation, four ways
**Semantic segmentation** gives *every pixel* of an image a class (road, car, sky ... or circle,
triangle, rectangle). Pick an image below (or upload one), choose the models and press
**Run the models**. Each tab explains one idea; all of them use the same image and models.
"""

NO_MODELS = """\
### No trained models found
This dashboard needs the trained weights in `{weights_dir}` (`<set>/<arch>.pt` with a model card
`<arch>.json` beside each). Train and export them with `python -m segmodels`, or point the app at
another folder with the environment variable `SEGMODELS_WEIGHTS`.
"""

COMPARE = """\
**What you see.** The coloured masks are each model's guess of the class of every pixel,
drawn over the image (slide *mask opacity* to see through them). When the image has a
**ground truth** (the hand-made correct mask: every example has one; for an upload, add a mask),
each model is scored against it.

**How it is scored.** For one class, count the pixels that are
**TP** (true positive: predicted *and* truly this class), **FP** (false positive: predicted but wrong) and
**FN** (false negative: missed). Then

$$\\mathrm{IoU} = \\frac{TP}{TP + FP + FN}$$

the overlap of prediction and truth divided by their union: 1 is perfect, 0 is no overlap.
**mIoU** is the mean IoU over the classes present in the truth or the prediction.
*mIoU (this image)* is measured live. *mIoU (test)* is the model's score on the whole held-out
test set, from its model card, with its 95% interval: the range the score would likely take on
another draw of test images. *Test vs best* compares each model with the best one shown on the
same images: *better* or *worse* only when the interval of the difference excludes 0, else *not
distinguishable*. *mIoU (card, val set)* is the score on the validation set the checkpoints were
chosen on: it runs high. **Latency** is measured here, on this machine: the median of
several timed runs after warm-up runs. **FLOPs** are the floating-point operations of one
forward pass at this image's size.

**The four architectures.** All share an *encoder* (repeatedly convolve and downsample: *what* is in the
image) and a *decoder* (upsample back to full resolution: *where* it is).
* **U-Net** (Ronneberger et al., 2015): the decoder mirrors the encoder and *skip connections* copy
  each encoder level's features across, so fine detail is not lost.
* **U-Net++** (Zhou et al., 2018): the skip connections become nested, densely connected
  convolution blocks that close the gap between encoder and decoder features; it can be *pruned*
  to a shallower, faster network (next tab).
* **U-Net 3+** (Huang et al., 2020): every decoder stage receives features from *all* scales
  ("full-scale skip connections"), mixing fine detail and coarse context.
* **DeepLabV3+** (Chen et al., 2018): the encoder still downsamples (to 1/16 or 1/8), but its last
  stage (at 1/16; its last two at 1/8) uses *dilated* (atrous) convolutions instead of a further
  stride, and ASPP gathers context at several scales on that feature map; a light decoder adds
  stride-4 detail to sharpen borders.
"""

PRUNING = """\
**U-Net++ pruning.** U-Net++ is trained with a segmentation head on each of its nested outputs
X(0,1) ... X(0,4) (*deep supervision*). So at test time we may stop at depth **L1, L2, L3 or L4** and
simply not compute the deeper part of the network. Shallower networks have fewer parameters and
run faster, but see less context, so they are usually less accurate: the trade-off of Fig. 3 of the
first U-Net++ paper (Zhou et al., DLMIA 2018), reproduced live on this image. Taking one depth's
output is the paper's *fast mode*; its *accurate mode* averages all the outputs (not offered here).
*Params* counts only the layers that depth uses.
"""

RECEPTIVE_FIELD = """\
**Receptive field.** The *receptive field* of an output pixel is the patch of the input image that
can influence it. Each 3x3 convolution widens it by 2 pixels x the current stride; every
downsampling doubles the stride, so deep layers "see" far.
* The **chart** shows the *theoretical* receptive field after every convolution and pooling layer,
  in the order they run. Layers that read only shallow features restart small (U-Net++'s nested
  nodes, U-Net 3+'s squeezes of shallow encoder features, DeepLabV3+'s low-level projection);
  U-Net's decoder layers all receive the deepest feature, so its curve keeps rising. Stars: layers
  that see the whole image (global pooling). The sizes are *about* right for any one pixel (see
  the arithmetic below).
* **Click on the image** to compute the *effective* receptive field of that output pixel
  (Luo et al., 2016): how strongly each input pixel changes the pixel's prediction (the gradient).
  Bright = strong influence. The square is the theoretical receptive field: the effective one is
  usually much smaller and concentrated near the centre.

**Dilation (atrous convolution).** A 3x3 kernel at *rate r* places its 9 taps *r* pixels apart: it
covers (2r + 1) x (2r + 1) pixels with the same 9 weights, so the receptive field grows without
downsampling, though not for free: the map it runs on was not downsampled either (the arithmetic
below measures the cost). **ASPP** (atrous spatial pyramid pooling, from DeepLab v2; the form here is
DeepLabV3's) runs a 1x1 conv, three 3x3 convs at rates 6, 12 and 18, and a global image average
*in parallel* on the same feature map and concatenates them: context at several scales at once.
**SPP** (spatial pyramid pooling, He et al. 2014) max-pools a feature map of any size into fixed
1x1, 2x2 and 4x4 grids of bins, giving a fixed-length summary; **PSPNet** pools at 1x1, 2x2, 3x3 and
6x6, upsamples and concatenates the result back onto the map.
"""

LOSSES = r"""
**Why class weights?** Most pixels are background, road or sky; a network can score well by
ignoring small classes. Counting the pixels of each class, $N_c$ out of $N$, the weight

$$w_c = \frac{N - N_c}{N}$$

is one minus the class's share of the pixels: close to 1 for every class that covers a small part
of the image, which with more than two classes is *most* of them, and clearly lower only for a
dominant class, so it hardly rebalances (the button below draws it on the current mask, with its
spread, largest over smallest weight; the **Loss lab** tab does it on whole training sets).
**Median-frequency** weights, $w_c = \mathrm{median}(f) / f_c$ with $f_c$ the share of class $c$ in
the images that contain it (Eigen & Fergus 2015), spread far more, which is why the chart uses a
log axis; they are what the shipped CamVid models were trained with. They raise the rare classes'
*accuracy* (recall): the model predicts them more often. Their IoU rises less than their recall,
because the extra predictions include false positives, and the classes whose pixels they take may
lose IoU. *Weighted cross-entropy* multiplies each pixel's loss by the weight of its true class.

**Cross-entropy vs focal loss.** If the network gives the true class the probability $p$,

$$\mathrm{CE}(p) = -\log p$$

$$\mathrm{FL}(p) = -(1 - p)^{\gamma} \log p$$

Focal loss (Lin et al., 2017) multiplies cross-entropy by $(1 - p)^{\gamma}$: for easy, already
well-classified pixels ($p$ near 1) that factor is tiny, so training concentrates on the hard
pixels. $\gamma = 0$ is plain cross-entropy; move the slider to see the curve change. The paper
also weights each class by $\alpha_t$ and found $\gamma = 2$ with $\alpha = 0.25$ for the rare
foreground best: once $\gamma$ has down-weighted the easy background, the rare class needs *less*
weight, not more.

**IoU map.** Pick a class and a model: green pixels are **TP**, red **FP**, blue **FN**; grey pixels
are true negatives (or unlabelled). IoU = TP / (TP + FP + FN).
"""

INSTANCES = r"""
**Semantic vs instance segmentation.** *Semantic* segmentation says *what class* each pixel is:
two touching circles are one "circle" region. *Instance* segmentation also separates the
*individual objects*: circle #1, circle #2. The **connected components** of a semantic mask
(groups of touching pixels of one class) are the cheapest guess at the objects, but they merge
touching objects and split occluded ones.

**Panoptic-DeepLab** (Cheng et al., CVPR 2020) finds the objects without boxes. Beside the
semantic logits it predicts an *instance-centre heatmap*, trained to a 2-D Gaussian on each
object's centre of mass, and at every pixel $x$ the *offset* $O(x)$ to its object's centre. The
centres $C_k$ are the heatmap's peaks (max-pooling NMS, a threshold, the top $k$); each object
pixel joins the centre nearest to where it points, $\hat{k}(x) = \arg\min_k \lVert C_k - (x + O(x)) \rVert$,
and each object takes the class most of its pixels were given. For the Shapes set the instance
model is the shipped DeepLabV3+ (its encoder, decoder and semantic head) with these two heads,
trained from it on the CPU; the paper gives the instance branch its own ASPP and decoder.

Instances are scored by **panoptic quality** (Kirillov et al., CVPR 2019): a predicted and a true
segment of one class match when their IoU exceeds 0.5, and
$PQ = \frac{\sum_{TP} \mathrm{IoU}}{|TP| + \frac{1}{2}|FP| + \frac{1}{2}|FN|} = SQ \times RQ$:
the mean IoU of the matches (SQ) times an F1 score of the detection (RQ).
"""
