"""Where a detector or segmentor with a ConvNeXt backbone is cut into FSDP2 units (``fully_shard``).

One unit per ConvNeXt block (the bulk of the parameters), one for the backbone's stem, downsampling
layers and output norms, one per neck and head the host calls through ``forward`` or through its
``loss``/``predict`` methods (registered with ``register_fsdp_forward_method``), and the root last for
what is left. Each unit's parameters are all-gathered just before it runs and freed after, so a rank
holds 1/world_size of every parameter, gradient and optimizer state plus one unit unsharded at a time.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from cvx2_backbone.models.convnext import Block, ConvNeXt

# Children of mmdet's and mmseg's models that the host only calls through forward or these methods.
# (DETR-like detectors reach into their bbox_head from outside it, so their heads stay in the root unit.)
HEAD_CHILDREN = ("neck", "rpn_head", "roi_head", "decode_head", "auxiliary_head", "panoptic_head")
HEAD_METHODS = ("loss", "predict", "loss_and_predict")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def _dtype(value: str | torch.dtype | None, what: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(f"mixed_precision {what}={value!r} is not a dtype; use one of {sorted(DTYPES)}")
    return DTYPES[value]


def mixed_precision_policy(setting: str | dict[str, Any] | None) -> MixedPrecisionPolicy:
    """``'bf16'``/``'fp16'`` (parameters and compute in that dtype, gradients reduced in fp32), a dict of
    :class:`~torch.distributed.fsdp.MixedPrecisionPolicy` arguments, or None (fp32 throughout)."""
    if setting is None:
        return MixedPrecisionPolicy()
    if isinstance(setting, str):
        setting = dict(param_dtype=setting, reduce_dtype="float32")
    unknown = set(setting) - {"param_dtype", "reduce_dtype", "output_dtype", "cast_forward_inputs"}
    if unknown:
        raise ValueError(f"unknown mixed_precision keys {sorted(unknown)}; valid: param_dtype, reduce_dtype, "
                         "output_dtype, cast_forward_inputs")
    return MixedPrecisionPolicy(param_dtype=_dtype(setting.get("param_dtype"), "param_dtype"),
                                reduce_dtype=_dtype(setting.get("reduce_dtype"), "reduce_dtype"),
                                output_dtype=_dtype(setting.get("output_dtype"), "output_dtype"),
                                cast_forward_inputs=setting.get("cast_forward_inputs", True))


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def shard_units(model: nn.Module, shard_heads: bool = True) -> list[tuple[str, nn.Module]]:
    """The modules to shard, innermost first and the root last, with their dotted names."""
    units = [(name, m) for name, m in model.named_modules() if isinstance(m, Block)]
    units += [(name, m) for name, m in model.named_modules() if isinstance(m, ConvNeXt)]
    if shard_heads:
        units += [(name, child) for name, child in model.named_children()
                  if name in HEAD_CHILDREN and not isinstance(child, nn.ModuleList) and _has_params(child)]
    units.append(("", model))
    return units


def shard_model(model: nn.Module, *, mixed_precision: str | dict | None = None, offload_to_cpu: bool = False,
                reshard_after_forward: bool | None = None, shard_heads: bool = True, mesh: Any = None) -> list[str]:
    """Apply ``fully_shard`` to the units of :func:`shard_units` in place; return their names ('' = root).

    ``reshard_after_forward=None`` is torch's default: free after forward except the root, needed first in backward.
    """
    options = dict(mp_policy=mixed_precision_policy(mixed_precision), reshard_after_forward=reshard_after_forward,
                   offload_policy=CPUOffloadPolicy() if offload_to_cpu else None, mesh=mesh)
    options = {key: value for key, value in options.items() if value is not None}
    names = []
    for name, module in shard_units(model, shard_heads):
        fully_shard(module, **options)
        if name in HEAD_CHILDREN:
            for method in HEAD_METHODS:
                if callable(getattr(module, method, None)):
                    register_fsdp_forward_method(module, method)
        names.append(name)
    return names
