"""mmpretrain's ConvNeXt layout (``mmpretrain.models.backbones.ConvNeXt``).

Blocks name their layers ``depthwise_conv``/``pointwise_conv1``/``pointwise_conv2`` (1x1 convs
when ``linear_pw_conv=False``); ``norm{i}`` are output norms, except that a classifier keeps only
the last one, applied after pooling: that one is the official classification ``norm``, and
``head.fc`` is the official ``head``.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.readers.rename import compile_rules, rename

NAME = "mmpretrain"
DESCRIPTION = "mmpretrain layout"
_SIGNATURE = re.compile(r"^stages\.\d+\.\d+\.depthwise_conv\.weight$")
_RULES = compile_rules([
    (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"^head\.fc\.", "head."),
])
_OUTPUT_NORM = re.compile(r"^norm(\d+)\.")


def matches(keys: Collection[str]) -> bool:
    return any(_SIGNATURE.match(k) for k in keys)


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = rename(state_dict, _RULES)
    norms = {int(m.group(1)) for k in renamed if (m := _OUTPUT_NORM.match(k))}
    stages = {int(k.split(".")[1]) for k in renamed if k.startswith("stages.")}
    if "head.weight" in renamed and stages and norms == {max(stages)}:
        last = max(stages)
        renamed = {(f"norm.{k.split('.', 1)[1]}" if k.startswith(f"norm{last}.") else k): v
                   for k, v in renamed.items()}
    return renamed
