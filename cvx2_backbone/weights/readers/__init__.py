"""Checkpoint layouts: recognising one from its keys and converting it to this project's layout.

Each layout module has ``NAME``, ``DESCRIPTION``, ``matches(keys)`` and ``convert(state_dict)``;
``canonical_shapes`` then gives every tensor the shape this project's modules store. A layout may add
``report(state_dict) -> (notes, left_out)`` (what the load report says about it, and the tensors it leaves out by
name and count) and ``LICENSE_NAME`` (the license every published checkpoint of that layout comes under).
"""
from __future__ import annotations

import re
from types import ModuleType

from torch import Tensor

from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.readers import (dinov3, eupe, hf_dinov3, huggingface, mmpretrain, official, sparse, timm,
                                           torchvision)

# Checked in this order; the official layout's signature is the loosest, so it comes last.
LAYOUTS: tuple[ModuleType, ...] = (huggingface, hf_dinov3, timm, mmpretrain, sparse, torchvision, eupe, dinov3,
                                   official)

_FLAT_PARAMS = re.compile(r"(\.grn\.(gamma|beta)|^stages\.\d+\.\d+\.gamma|\.bias)$")
_POINTWISE = re.compile(r"^stages\.\d+\.\d+\.pwconv[12]\.weight$")


def detect_layout(state_dict: dict[str, Tensor]) -> ModuleType:
    """The layout module whose signature the keys carry; a clear error naming the known layouts otherwise."""
    for layout in LAYOUTS:
        if layout.matches(state_dict.keys()):
            return layout
    sample = ", ".join(sorted(state_dict)[:8])
    known = "; ".join(f"{layout.NAME} ({layout.DESCRIPTION})" for layout in LAYOUTS)
    raise CheckpointError(f"unrecognised checkpoint layout (first keys: {sample}); this is not a ConvNeXt checkpoint "
                          f"of a known kind: {known}. If the backbone sits under another prefix, pass prefix=...")


def canonical_shapes(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """GRN, layer scale and biases 1-D; 1x1-conv MLP weights (out, in, 1, 1) as Linear weights (out, in)."""
    result = {}
    for key, value in state_dict.items():
        if _FLAT_PARAMS.search(key) and value.dim() > 1 and value.numel() == value.shape[-1]:
            value = value.reshape(-1)
        elif _POINTWISE.match(key) and value.dim() == 4 and value.shape[2:] == (1, 1):
            value = value.flatten(1)
        result[key] = value
    return result


def to_project_layout(state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], ModuleType]:
    """Convert any known layout to this project's; returns the converted dict and the layout it came in."""
    layout = detect_layout(state_dict)
    return canonical_shapes(layout.convert(state_dict)), layout


def layout_named(name: str) -> ModuleType | None:
    """The layout module called ``name`` (None for names of no layout)."""
    return next((layout for layout in LAYOUTS if layout.NAME == name), None)


def layout_report(layout: ModuleType, state_dict: dict[str, Tensor]) -> tuple[list[str], dict[str, int]]:
    """What a layout says about its conversion of ``state_dict`` and what it left out (none for most layouts)."""
    report = getattr(layout, "report", None)
    return report(state_dict) if report is not None else ([], {})
