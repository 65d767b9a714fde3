"""mmengine registries of this package.

Everything the package registers lives in child registries with scope ``cvx2_backbone`` under
mmengine's roots, so configs name it ``cvx2_backbone.<Name>`` (``type='cvx2_backbone.ConvNeXtV2'``,
``type='cvx2_backbone.CPUAutocastOptimWrapper'``, ``type='cvx2_backbone.ImageFolder'``,
``type='cvx2_backbone.PlainCheckpointHook'``, ``strategy=dict(type='cvx2_backbone.FSDP2Strategy')``) from
mmdet's and mmseg's scopes alike, without importing either of them here. Each registry names the modules that
fill it (``locations``): mmengine imports them on the first lookup, so importing the package stays cheap.
The one exception is the layer-decay optimizer constructor, which the public contract names without a
prefix: it is also registered in mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS``
(:func:`register_root_constructor`, which ``import cvx2_backbone`` calls).

``WEIGHT_INITIALIZERS`` holds this package's ``Pretrained`` loader; the backbone looks it up here
(and mmengine imports :mod:`cvx2_backbone.weights.initializer` on first use), so the model module
does not import the weights package, which imports the model.
"""
from typing import Any

from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import STRATEGIES as MMENGINE_STRATEGIES
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
from mmengine.registry import Registry

SCOPE = "cvx2_backbone"
MODELS = Registry("model", parent=MMENGINE_MODELS, scope=SCOPE,
                  locations=["cvx2_backbone.models.convnext", "cvx2_backbone.fcmae.model"])
DATASETS = Registry("dataset", parent=MMENGINE_DATASETS, scope=SCOPE, locations=["cvx2_backbone.fcmae.data"])
TRANSFORMS = Registry("transform", parent=MMENGINE_TRANSFORMS, scope=SCOPE, locations=["cvx2_backbone.fcmae.data"])
HOOKS = Registry("hook", parent=MMENGINE_HOOKS, scope=SCOPE, locations=["cvx2_backbone.engine.hooks"])
MODEL_WRAPPERS = Registry("model_wrapper", parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE,
                          locations=["cvx2_backbone.engine.distributed"])
OPTIM_WRAPPERS = Registry("optim_wrapper", parent=MMENGINE_OPTIM_WRAPPERS, scope=SCOPE,
                          locations=["cvx2_backbone.engine.device"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry("optimizer wrapper constructor", parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                      scope=SCOPE, locations=["cvx2_backbone.engine.optimizers.layer_decay"])
STRATEGIES = Registry("strategy", parent=MMENGINE_STRATEGIES, scope=SCOPE, locations=["cvx2_backbone.engine.fsdp2"])
WEIGHT_INITIALIZERS = Registry("weight initializer", parent=MMENGINE_WEIGHT_INITIALIZERS, scope=SCOPE,
                               locations=["cvx2_backbone.weights.initializer"])

ROOT_CONSTRUCTOR = "ConvNeXtLayerDecayOptimizerConstructor"


def _build_root_constructor(**kwargs: Any) -> Any:
    """Stands in for the constructor class in mmengine's root registry until its module is imported (the lookup in
    this package's registry imports it, through ``locations``)."""
    return OPTIM_WRAPPER_CONSTRUCTORS.get(ROOT_CONSTRUCTOR)(**kwargs)


def register_root_constructor() -> None:
    """Put the layer-decay constructor's name in mmengine's root registry without importing torch (once; the class
    itself replaces the entry when :mod:`cvx2_backbone.engine.optimizers.layer_decay` is imported)."""
    if ROOT_CONSTRUCTOR not in MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS.register_module(name=ROOT_CONSTRUCTOR, module=_build_root_constructor)
