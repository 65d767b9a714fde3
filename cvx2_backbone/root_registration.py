"""The one name this package registers in mmengine's root registries, without importing torch.

Configs name the layer-decay constructor without a prefix (``constructor='ConvNeXtLayerDecayOptimizerConstructor'``),
so it must be in mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS`` as soon as ``cvx2_backbone`` is imported. Until
:mod:`cvx2_backbone.lr_decay.constructor` is imported (which replaces this entry with the class itself), the entry
is a function that imports the class and builds it.
"""
from __future__ import annotations

from typing import Any

ROOT_CONSTRUCTOR = "ConvNeXtLayerDecayOptimizerConstructor"


def _build_constructor(**kwargs: Any) -> Any:
    from .lr_decay.constructor import ConvNeXtLayerDecayOptimizerConstructor

    return ConvNeXtLayerDecayOptimizerConstructor(**kwargs)


def register_root_constructor() -> None:
    """Put the layer-decay constructor's name in mmengine's root registry (once; the class itself wins)."""
    from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

    if ROOT_CONSTRUCTOR not in OPTIM_WRAPPER_CONSTRUCTORS.module_dict:
        OPTIM_WRAPPER_CONSTRUCTORS.register_module(name=ROOT_CONSTRUCTOR, module=_build_constructor)
