"""ConvNeXt V2 / V1 backbones for mmdet and mmsegmentation.

Importing the package registers the backbones (``cvx2_backbone.ConvNeXtV2``,
``cvx2_backbone.ConvNeXt``) and the layer-wise lr decay optimizer constructor with mmengine;
it needs torch, mmengine and timm only. ``cvx2_backbone.FCMAE`` (masked-autoencoder pre-training) and
its image-folder dataset register too. Where mmdeploy is (or later gets) imported too, this package's rewriters
register with it (``cvx2_backbone.deploy.attach_to_mmdeploy``), so mmdeploy's own tools export these models exactly.
"""
from .convnext import V1_ARCHS, V2_ARCHS, ConvNeXt, ConvNeXtV2
from . import lr_decay  # noqa: F401  (registers the optimizer constructor)
from .fcmae import FCMAE
from .extractor import FeatureExtractor
from .registry import MODELS
from .version import __version__
from .deploy import attach_to_mmdeploy

attach_to_mmdeploy()

__all__ = ["FCMAE", "ConvNeXt", "ConvNeXtV2", "FeatureExtractor", "MODELS", "V1_ARCHS", "V2_ARCHS", "__version__"]
