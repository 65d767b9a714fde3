"""Hugging Face transformers' ConvNext / ConvNextV2 layout.

Base models (``ConvNextV2Model``), classifiers (``convnextv2.``/``convnext.`` prefix and
``classifier``), and backbones (``hidden_states_norms.stem``/``.stageK``, which are output norms).
GRN is ``grn.weight/bias`` (older releases: ``grn.gamma/beta``) shaped (1, 1, 1, C); V1's layer
scale is ``layer_scale_parameter``.
"""
from __future__ import annotations

import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.readers.rename import compile_rules, rename

NAME = "huggingface"
DESCRIPTION = "Hugging Face transformers layout"
_SIGNATURE = re.compile(r"^((convnextv2|convnext)\.)?embeddings\.patch_embeddings\.weight$")
_RULES = compile_rules([
    (r"^(convnextv2|convnext)\.", ""),
    (r"^embeddings\.patch_embeddings\.", "downsample_layers.0.0."),
    (r"^embeddings\.layernorm\.", "downsample_layers.0.1."),
    (r"^encoder\.stages\.(\d+)\.downsampling_layer\.", r"downsample_layers.\1."),
    (r"^encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.\2."),
    (r"\.layernorm\.", ".norm."),
    (r"\.grn\.weight$", ".grn.gamma"),
    (r"\.grn\.bias$", ".grn.beta"),
    (r"\.layer_scale_parameter$", ".gamma"),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
    (r"^hidden_states_norms\.stem\.", "norm_stem."),
])
_STAGE_NORM = re.compile(r"^hidden_states_norms\.stage(\d+)\.")


def matches(keys: Collection[str]) -> bool:
    return any(_SIGNATURE.match(k) for k in keys)


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    renamed = rename(state_dict, _RULES)
    # stageK (1-based, Hugging Face) is the project's norm{K-1}
    return {_STAGE_NORM.sub(lambda m: f"norm{int(m.group(1)) - 1}.", k): v for k, v in renamed.items()}
