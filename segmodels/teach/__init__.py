"""The teaching layer over the library: what the dashboard shows and explains, computed from
the real models so that no number is typed by hand. The core (registry, encoders, decoders,
models, inference, zoo, data, metrics, losses, training) never imports from here.

* :mod:`.numbers`: the arithmetic the explanations quote (receptive fields, class weights,
  image vs dataset mIoU, valid-convolution sizes, ASPP rates);
* :mod:`.architecture`: what a model runs (widths, parameters, dilations, FLOPs per level);
* :mod:`.pooling`: SPP and PSPNet's pyramid pooling, the context modules no model here uses;
* :mod:`.losslab`: a tiny U-Net trained for seconds with each loss on Imbalanced Shapes;
* :mod:`.diagrams`: each decoder's nodes, edges and drawing coordinates;
* :mod:`.network_graph`: a model's whole graph, read by probing it;
* :mod:`.look_inside` and :mod:`.feature_maps`: every node's feature map on one image.
"""
