"""The benchmark's weights: random values that exercise every parameter, and the same weights in another library's
model (timm's, Hugging Face's), so that every implementation computes the same function."""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from cvx2_backbone.weights import convert_state_dict


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Random values for every parameter, GRN, layer scale, norms and biases included, so each one matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() > 1:
                param.copy_(noise * 0.02)
            elif name.endswith("grn.gamma"):
                param.copy_(noise * 0.5)
            elif name.endswith(".weight"):  # the LayerNorms' scales
                param.copy_(1 + noise * 0.1)
            else:
                param.copy_(noise * 0.1)
    return model


def transfer_weights(state_dict: Mapping[str, Tensor], target: nn.Module) -> None:
    """Load this backbone's weights into another library's model.

    The key mapping comes from the weights package's converter: the target's tensors are filled
    with their index, converted to this project's layout, and read back.
    """
    own = target.state_dict()
    keys = list(own)
    markers = {k: torch.full(v.shape, float(i)) for i, (k, v) in enumerate(own.items()) if v.is_floating_point()}
    converted = convert_state_dict(markers).state_dict
    loaded = {}
    for ours, marked in converted.items():
        if ours in state_dict:
            theirs = keys[int(marked.flatten()[0])]
            loaded[theirs] = state_dict[ours].reshape(own[theirs].shape)
    unmapped = sorted(set(state_dict) - set(converted))
    if unmapped:
        raise RuntimeError(f"{type(target).__name__} has no place for {unmapped[:5]}; the layouts differ")
    target.load_state_dict(loaded, strict=False)
