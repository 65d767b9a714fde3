"""mmengine registries of this package.

The backbone lives in a child registry with scope ``cvx2_backbone`` under mmengine's root
``MODELS``, so ``type='cvx2_backbone.ConvNeXtV2'`` resolves from mmdet's and mmseg's scopes
alike without importing either of them here. FCMAE pre-training adds its image-folder dataset and
transforms the same way.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry("model", parent=MMENGINE_MODELS, scope="cvx2_backbone")
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope="cvx2_backbone")
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope="cvx2_backbone")
