"""timm's ConvNeXt layout (full models and ``features_only`` wrappers).

``stem.{0,1}``, ``stages.i.downsample.{0,1}``, ``stages.i.blocks.j.{conv_dw,norm,mlp.fc1,
mlp.grn.weight/bias,mlp.fc2,gamma}``, ``head.norm``/``head.fc``. The atto..nano models use 1x1
convolutions in the MLP ((4C, C, 1, 1) weights), which the shared canonicalisation reshapes.
A ``features_only`` model flattens ``stem.0`` to ``stem_0`` and ``stages.i`` to ``stages_i``.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.readers.rename import compile_rules, rename

NAME = "timm"
DESCRIPTION = "timm layout"
_SIGNATURE = re.compile(r"^(stem[._]0\.weight|stages[._]\d+\.blocks\.\d+\.conv_dw\.weight)$")
_RULES = compile_rules([
    (r"^stem_(\d+)\.", r"stem.\1."),
    (r"^stages_(\d+)\.", r"stages.\1."),
    (r"^stem\.", "downsample_layers.0."),
    (r"^stages\.(\d+)\.downsample\.", r"downsample_layers.\1."),
    (r"^stages\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.conv_dw\.", ".dwconv."),
    (r"\.mlp\.fc(\d)\.", r".pwconv\1."),
    (r"\.mlp\.grn\.weight$", ".grn.gamma"),
    (r"\.mlp\.grn\.bias$", ".grn.beta"),
    (r"^head\.norm\.", "norm."),
    (r"^head\.fc\.", "head."),
])


def matches(keys: Collection[str]) -> bool:
    return any(_SIGNATURE.match(k) for k in keys)


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return rename(state_dict, _RULES)
