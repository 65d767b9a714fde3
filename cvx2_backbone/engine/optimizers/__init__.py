"""Layer-wise learning-rate decay for the ConvNeXt backbones: the rules and the mmengine optimizer constructor.

Importing it registers ``ConvNeXtLayerDecayOptimizerConstructor`` in mmengine's root
``OPTIM_WRAPPER_CONSTRUCTORS`` (and as ``cvx2_backbone.ConvNeXtLayerDecayOptimizerConstructor``);
see docs/lr_decay.md. The layer-id rules live in :mod:`cvx2_backbone.models.layer_ids`, which the model uses too.
"""
from cvx2_backbone.models.layer_ids import (DECAY_TYPES, backbone_layer_depth, convnext_layer_id, default_num_layers,
                                            lr_scale, min_num_layers, resolve_num_layers)
from cvx2_backbone.engine.optimizers.layer_decay import (ConvNeXtLayerDecayOptimizerConstructor, find_backbone,
                                                         no_decay_param_ids)
from cvx2_backbone.engine.optimizers.lr_groups import format_lr_groups

__all__ = ["ConvNeXtLayerDecayOptimizerConstructor", "DECAY_TYPES", "backbone_layer_depth", "convnext_layer_id",
           "default_num_layers", "find_backbone", "format_lr_groups", "lr_scale", "min_num_layers",
           "no_decay_param_ids", "resolve_num_layers"]
