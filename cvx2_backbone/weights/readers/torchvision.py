"""torchvision's ConvNeXt layout (``torchvision.models.convnext_{tiny,small,base,large}``, V1 only).

``features`` interleaves stem, stages and downsampling: ``features.0`` is the stem (conv, LayerNorm),
``features.{1,3,5,7}`` the stages, ``features.{2,4,6}`` the downsampling layers (LayerNorm, conv).
A block is ``block.{0: dwconv, 2: LayerNorm, 3: Linear C->4C, 5: Linear 4C->C}`` (1 and 4 are the
permutes and the GELU) with its layer scale ``layer_scale`` shaped (C, 1, 1). The classifier is
``classifier.0`` (LayerNorm of the pooled features: the official ``norm``) and ``classifier.2`` (``head``).
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.errors import CheckpointError

NAME = "torchvision"
DESCRIPTION = "torchvision layout"
_SIGNATURE = re.compile(r"^features\.\d+\.\d+\.block\.0\.weight$")
_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(block\.(\d)\.(weight|bias)|layer_scale)$")
_SEQUENTIAL = re.compile(r"^features\.(\d+)\.([01])\.(weight|bias)$")
_CLASSIFIER = re.compile(r"^classifier\.([02])\.(weight|bias)$")
_BLOCK_LAYERS = {"0": "dwconv", "2": "norm", "3": "pwconv1", "5": "pwconv2"}


def matches(keys: Collection[str]) -> bool:
    return any(_SIGNATURE.match(k) for k in keys)


def _rename(key: str) -> str:
    if match := _BLOCK.match(key):
        feature, block, layer = int(match.group(1)), match.group(2), match.group(4)
        if feature % 2 == 1 and (layer is None or layer in _BLOCK_LAYERS):
            stage = f"stages.{feature // 2}.{block}"
            return f"{stage}.gamma" if layer is None else f"{stage}.{_BLOCK_LAYERS[layer]}.{match.group(5)}"
    elif match := _SEQUENTIAL.match(key):
        feature = int(match.group(1))
        if feature % 2 == 0:  # 0: the stem, 2/4/6: downsampling layers 1/2/3
            return f"downsample_layers.{feature // 2}.{match.group(2)}.{match.group(3)}"
    elif match := _CLASSIFIER.match(key):
        return f"{'norm' if match.group(1) == '0' else 'head'}.{match.group(2)}"
    raise CheckpointError(f"unexpected key {key!r} in a torchvision ConvNeXt checkpoint")


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    converted = {}
    for key, value in state_dict.items():
        new_key = _rename(key)
        converted[new_key] = value.reshape(-1) if key.endswith(".layer_scale") else value
    return converted
