"""segmodels: U-Net, U-Net++, U-Net 3+ and DeepLabV3+ on pluggable encoders, with the
losses, metrics, receptive-field tools, datasets, training, evaluation and benchmarking
around them. No UI code lives here."""

from .encoders import ENCODERS, create_encoder
from .models import ARCH_NAMES, ARCHITECTURES, SegmentationModel, create_model

__version__ = "0.1.0"

__all__ = ["ARCHITECTURES", "ARCH_NAMES", "ENCODERS", "SegmentationModel", "create_encoder", "create_model", "__version__"]
