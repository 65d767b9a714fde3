"""Hugging Face transformers' ``dinov3_convnext`` layout (``DINOv3ConvNextModel`` / ``DINOv3ConvNextBackbone``).

A ``save_pretrained`` folder stores ``stages.N.downsample_layers.{0,1}.*``,
``stages.N.layers.M.{depthwise_conv,layer_norm,pointwise_conv1,pointwise_conv2,gamma}`` and, for the Model, the
final ``layer_norm``; in memory the encoder sits under ``model.`` (transformers renames on save and load), which is
accepted too. The final norm is DINOv3's ``norms[3]``: it is also loaded as stage4's output norm (see
:mod:`.dinov3`). The Backbone class has no norm at all: its feature maps are the raw stage outputs.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.readers import dinov3
from cvx2_backbone.weights.readers.rename import compile_rules, rename

NAME = "huggingface-dinov3"
DESCRIPTION = "Hugging Face transformers dinov3_convnext layout"
LICENSE_NAME = "dinov3-license"
_SIGNATURE = re.compile(r"^(model\.)?stages\.\d+\.layers\.\d+\.depthwise_conv\.weight$")
_RULES = compile_rules([
    (r"^model\.stages\.", "stages."),
    (r"^stages\.(\d+)\.downsample_layers\.(\d+)\.", r"downsample_layers.\1.\2."),
    (r"^stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
    (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.layer_norm\.", ".norm."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"^layer_norm\.", "norm."),
])


def matches(keys: Collection[str]) -> bool:
    return any(_SIGNATURE.match(k) for k in keys)


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = rename(state_dict, _RULES)
    if "norm.weight" in renamed:
        renamed.update(dinov3.dense_norm_from_final(renamed, dinov3.last_stage(renamed)))
    return renamed


def report(state_dict: dict[str, Tensor]) -> tuple[list[str], dict[str, int]]:
    """The dense-norm note when the folder has the final norm (a Model; a Backbone has none)."""
    if "layer_norm.weight" in state_dict:
        return [dinov3.DENSE_NOTE], {}
    return ["a DINOv3ConvNextBackbone has no norm: its feature maps are the raw stage outputs (build the backbone "
            "with out_norm=False to match them)"], {}
