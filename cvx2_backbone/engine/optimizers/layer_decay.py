"""``ConvNeXtLayerDecayOptimizerConstructor``: layer-wise lr decay for detectors and segmentors with this backbone.

Registered in mmengine's root ``OPTIM_WRAPPER_CONSTRUCTORS``, so configs under ``default_scope``
mmdet and mmseg find it by its plain name (the public contract), and as
``cvx2_backbone.ConvNeXtLayerDecayOptimizerConstructor`` in this package's child registry. It runs
mmengine's default constructor first (``custom_keys``, ``bias_lr_mult``, ``dwconv_decay_mult``,
``dcn_offset_lr_mult``, ``bypass_duplicate`` keep working), then multiplies every lr by its layer's
scale, turns weight decay off for biases, norms, GRN and layer scale whatever their shapes, and
merges parameters with equal settings into groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as ROOT_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from torch import nn

from cvx2_backbone.models.convnext import GRN, Block, ConvNeXt
from cvx2_backbone.registry import OPTIM_WRAPPER_CONSTRUCTORS
from cvx2_backbone.models.layer_ids import (check_decay_rate, check_decay_type, check_num_layers, convnext_layer_id,
                                            lr_scale, resolve_num_layers)
from cvx2_backbone.engine.optimizers.lr_groups import format_lr_groups

OWN_KEYS = ("decay_rate", "decay_type", "num_layers")
# mmengine options that would only re-enable decay on parameters this constructor never decays.
ZERO_ONLY_KEYS = ("bias_decay_mult", "norm_decay_mult", "flat_decay_mult")
DEFAULT_KEYS = ("custom_keys", "bias_lr_mult", "dwconv_decay_mult", "dcn_offset_lr_mult", "bypass_duplicate",
                *ZERO_ONLY_KEYS)
NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


@dataclass(frozen=True)
class DecayLayout:
    """Where the backbone sits and which rule applies; the header of the logged table."""

    backbone_path: str
    backbone_type: str
    depths: tuple[int, ...]
    decay_type: str
    decay_rate: float
    num_layers: int
    num_layers_given: bool
    frozen_tensors: int

    def describe(self) -> str:
        where = repr(self.backbone_path) if self.backbone_path else "the model itself"
        origin = "given" if self.num_layers_given else "derived from depths"
        return (f"Layer-wise lr decay (ConvNeXtLayerDecayOptimizerConstructor): {self.backbone_type} at {where}, "
                f"depths {list(self.depths)}\ndecay_type={self.decay_type}, decay_rate={self.decay_rate}, "
                f"num_layers={self.num_layers} ({origin}); heads and output norms are layer {self.num_layers + 1}"
                + (f"; {self.frozen_tensors} frozen tensors left out" if self.frozen_tensors else ""))


def find_backbone(model: nn.Module) -> tuple[str, ConvNeXt]:
    """The single ConvNeXt/ConvNeXtV2 module of ``model`` and its dotted path ('' for the model itself)."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, ConvNeXt)]
    if not found:
        raise TypeError(
            f"ConvNeXtLayerDecayOptimizerConstructor needs a model containing a cvx2_backbone ConvNeXt or "
            f"ConvNeXtV2 backbone, but {type(model).__name__} has none; use backbone=dict(type="
            "'cvx2_backbone.ConvNeXtV2', ...) or another optimizer constructor")
    if len(found) > 1:
        raise ValueError(f"found {len(found)} ConvNeXt backbones ({', '.join(repr(n) for n, _ in found)}); "
                         "ConvNeXtLayerDecayOptimizerConstructor supports models with exactly one")
    return found[0]


def no_decay_param_ids(model: nn.Module) -> set[int]:
    """ids of parameters that get no weight decay: biases, 0/1-D tensors, norms, GRN and layer scale."""
    ids = set()
    for module in model.modules():
        exempt = isinstance(module, NORM_TYPES + (GRN,))
        for name, param in module.named_parameters(recurse=False):
            if exempt or name == "bias" or param.dim() <= 1 or (isinstance(module, Block) and name == "gamma"):
                ids.add(id(param))
    return ids


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
@ROOT_OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)  # replaces registry.register_root_constructor's stand-in
class ConvNeXtLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay for a cvx2_backbone ConvNeXt backbone.

    ``paramwise_cfg`` keys: ``decay_rate`` (required, in (0, 1]), ``decay_type`` (``layer_wise``
    (default), ``stage_wise`` or ``block_wise``), ``num_layers`` (optional, derived from the depths),
    plus mmengine's default options. After building, ``lr_table`` holds the table it logged.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        unknown = sorted(set(paramwise_cfg) - set(OWN_KEYS) - set(DEFAULT_KEYS))
        if unknown:
            raise ValueError(f"unknown paramwise_cfg keys {unknown} for ConvNeXtLayerDecayOptimizerConstructor; "
                             f"valid keys are {list(OWN_KEYS) + list(DEFAULT_KEYS)}")
        if "decay_rate" not in paramwise_cfg:
            raise ValueError("ConvNeXtLayerDecayOptimizerConstructor needs paramwise_cfg=dict(decay_rate=...), "
                             "e.g. 0.95 (detection) or 0.9 (segmentation); 1.0 turns the decay off")
        for key in ZERO_ONLY_KEYS:
            if paramwise_cfg.get(key, 0) != 0:
                raise ValueError(f"paramwise_cfg {key}={paramwise_cfg[key]} is not supported: "
                                 "ConvNeXtLayerDecayOptimizerConstructor never decays biases, norms or 1-D "
                                 f"parameters; remove {key}")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None:
            raise ValueError("layer-wise lr decay scales the optimizer's lr, but optimizer has no 'lr'; "
                             "set optim_wrapper.optimizer.lr")
        self.decay_rate = check_decay_rate(paramwise_cfg["decay_rate"])
        self.decay_type = check_decay_type(paramwise_cfg.get("decay_type", "layer_wise"))
        self.num_layers = check_num_layers(paramwise_cfg.get("num_layers"))
        self.layout: DecayLayout | None = None
        self.lr_table: str | None = None

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = "", **kwargs) -> None:
        """Append the decayed parameter groups of ``module`` (a model, a bare backbone or a DDP wrapper)."""
        if prefix:  # mmengine's default pass recursing into a child module
            super().add_params(params, module, prefix=prefix, **kwargs)
            return
        model = module.module if is_model_wrapper(module) else module
        path, backbone = find_backbone(model)
        num_layers = resolve_num_layers(backbone.depths, self.decay_type, self.num_layers)
        frozen = sum(not p.requires_grad for p in model.parameters())
        self.layout = DecayLayout(path, type(backbone).__name__, tuple(backbone.depths), self.decay_type,
                                  self.decay_rate, num_layers, self.num_layers is not None, frozen)
        backbone_prefix = f"{path}." if path else ""

        default_groups: List[dict] = []
        super().add_params(default_groups, model, **kwargs)
        names = {id(p): name for name, p in model.named_parameters()}
        no_decay = no_decay_param_ids(model)
        merged: dict[str, dict] = {}
        for group in default_groups:
            (param,) = group["params"]
            name = names[id(param)]
            layer_id = (convnext_layer_id(name[len(backbone_prefix):], backbone.depths, self.decay_type, num_layers)
                        if name.startswith(backbone_prefix) else num_layers + 1)
            scale = lr_scale(self.decay_rate, layer_id, num_layers)
            settings = {k: v for k, v in group.items() if k != "params"}
            settings["lr"] = settings.get("lr", self.base_lr) * scale
            decay = id(param) not in no_decay
            if not decay:
                settings["weight_decay"] = 0.0
            elif self.base_wd is not None:
                settings.setdefault("weight_decay", self.base_wd)
            settings.update(layer_id=layer_id, lr_scale=scale, decay=decay)
            key = repr(sorted(settings.items()))
            merged.setdefault(key, {**settings, "params": []})["params"].append(param)

        groups = sorted(merged.values(), key=lambda g: (g["layer_id"], not g["decay"]))
        used: dict[str, int] = {}
        for group in groups:
            base_name = f"layer_{group['layer_id']}_{'decay' if group.pop('decay') else 'no_decay'}"
            used[base_name] = used.get(base_name, 0) + 1
            group["group_name"] = base_name if used[base_name] == 1 else f"{base_name}_{used[base_name]}"
        params.extend(groups)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        """Build the optimizer wrapper and log the table of its parameter groups."""
        optim_wrapper = super().__call__(model)
        self.lr_table = format_lr_groups(optim_wrapper.optimizer.param_groups, self.base_lr, self.layout.describe())
        print_log("\n" + self.lr_table, logger="current")
        return optim_wrapper
