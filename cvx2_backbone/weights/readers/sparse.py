"""Dumps of the official sparse FCMAE encoder (MinkowskiEngine modules).

Convolutions store a ``kernel`` of shape (k*k, in, out) (depthwise: (k*k, C)), LayerNorms and
Linears sit one level down (``.ln.``, ``.linear.``), conv biases and GRN parameters are (1, C).
The kernel index runs over the window column-major, so kernel[w * k + h] is weight[..., h, w]
(the official ``remap_checkpoint_keys`` transposes the same way).
"""
from __future__ import annotations

import math
import re
from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers.rename import compile_rules, rename

NAME = "fcmae-sparse"
DESCRIPTION = "official FCMAE sparse-encoder dump (MinkowskiEngine names)"
_SPARSE = re.compile(r"^(downsample_layers|stages)\.\d+\..*(\.kernel$|\.ln\.|\.linear\.)")
_RULES = compile_rules([(r"\.ln\.", "."), (r"\.linear\.", "."), (r"\.kernel$", ".weight")])


def matches(keys: Collection[str]) -> bool:
    return any(_SPARSE.match(k) for k in keys)


def dense_kernel(key: str, kernel: Tensor) -> Tensor:
    """A MinkowskiEngine kernel as a Conv2d weight: (k*k, in, out) -> (out, in, k, k); (k*k, C) -> (C, 1, k, k)."""
    side = math.isqrt(kernel.shape[0])
    if side * side != kernel.shape[0] or kernel.dim() not in (2, 3):
        raise CheckpointError(f"{key}: a sparse kernel must be (k*k, in, out) or (k*k, C), got {tuple(kernel.shape)}")
    if kernel.dim() == 2:
        kernel = kernel[:, None, :]  # depthwise: one input channel per group
    out_channels, in_channels = kernel.shape[2], kernel.shape[1]
    weight = kernel.permute(2, 1, 0).reshape(out_channels, in_channels, side, side)
    return weight.transpose(2, 3).contiguous()


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    dense = {k: dense_kernel(k, v) if k.endswith(".kernel") else v for k, v in state_dict.items()}
    return rename(dense, _RULES)
