"""ConvNeXt V2 / V1 backbones for mmdet and mmsegmentation.

Importing the package registers the backbones (``cvx2_backbone.ConvNeXtV2``,
``cvx2_backbone.ConvNeXt``) and the layer-wise lr decay optimizer constructor with mmengine;
it needs torch, mmengine and timm only. ``cvx2_backbone.FCMAE`` (masked-autoencoder pre-training) and
its image-folder dataset register too. Importing it also lets torch's safe ``torch.load`` read mmengine's
checkpoints (exactly the types named in :mod:`cvx2_backbone.checkpoint_globals`), for every tool that loads them.
"""
from . import checkpoint_globals
from .convnext import V1_ARCHS, V2_ARCHS, ConvNeXt, ConvNeXtV2
from . import lr_decay  # noqa: F401  (registers the optimizer constructor)
from .fcmae import FCMAE
from .extractor import FeatureExtractor
from .registry import MODELS
from .version import __version__

checkpoint_globals.register()

__all__ = ["FCMAE", "ConvNeXt", "ConvNeXtV2", "FeatureExtractor", "MODELS", "V1_ARCHS", "V2_ARCHS", "__version__"]
