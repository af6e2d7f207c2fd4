"""segmodels: U-Net, U-Net++, U-Net 3+ and DeepLabV3+ on pluggable encoders, with the
losses, metrics, receptive-field tools, datasets, training, evaluation and benchmarking
around them. No UI code lives here.

A model is an encoder, a decoder and heads (:class:`SegmentationModel`); architectures and
encoders are registered by name (:func:`register_architecture`, :func:`register_encoder`)
and built with :func:`create_model`; the project's trained weights come from
:func:`pretrained`, their typed cards from :func:`model_card`."""

from .encoders import ENCODERS, Encoder, create_encoder, register_encoder
from .modelcard import ModelCard
from .models import ARCH_NAMES, ARCHITECTURES, SegmentationModel, create_model, register_architecture
from .zoo import list_models, pretrained
from .zoo import read_card as model_card

__version__ = "0.2.0"

__all__ = [
    "ARCHITECTURES",
    "ARCH_NAMES",
    "ENCODERS",
    "Encoder",
    "ModelCard",
    "SegmentationModel",
    "create_encoder",
    "create_model",
    "list_models",
    "model_card",
    "pretrained",
    "register_architecture",
    "register_encoder",
    "__version__",
]
