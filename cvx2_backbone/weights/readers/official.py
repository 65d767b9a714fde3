"""The official ConvNeXt / ConvNeXt V2 layout, which is also this project's.

``downsample_layers.i.{0,1}``, ``stages.i.j.{dwconv,norm,pwconv1,grn,pwconv2,gamma}``, the
classifier's ``norm``/``head``, and (in this project's detector checkpoints) the output norms
``norm0``..``normN-1``/``norm_stem``. Covers classification, EMA and dense FCMAE files.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

NAME = "official"
DESCRIPTION = "official ConvNeXt/ConvNeXt-V2 layout"
_BLOCK = re.compile(r"^stages\.\d+\.\d+\.dwconv\.weight$")


def matches(keys: Collection[str]) -> bool:
    return any(_BLOCK.match(k) for k in keys) and any(k.startswith("downsample_layers.") for k in keys)


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return dict(state_dict)
