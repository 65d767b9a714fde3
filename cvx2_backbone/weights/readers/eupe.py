"""EUPE ConvNeXt checkpoints (facebookresearch/EUPE, ``eupe_convnext_*_pretrain_*.pth``).

The model is DINOv3's ConvNeXt (:mod:`.dinov3`); the released files also hold the distillation projectors
(``projectors.*``) and may hold feature norms (``norms.*``) used only in training. The EUPE code itself loads them
with ``strict=False``; here the projectors and any feature norm the model does not have are left out and listed in
the load report, never dropped silently, and ``norms.3`` (the final norm) is handled as for DINOv3.
"""
from __future__ import annotations

from typing import Collection

from torch import Tensor

from cvx2_backbone.weights.readers import dinov3

NAME = "eupe"
DESCRIPTION = "EUPE ConvNeXt layout (DINOv3 keys + distillation projectors)"
LICENSE_NAME = "fair-noncommercial-research-license"
_TRAINING_ONLY = "projectors."


def matches(keys: Collection[str]) -> bool:
    return dinov3.official_keys(keys) and any(k.startswith(_TRAINING_ONLY) for k in keys)


def _model_part(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state_dict.items() if not k.startswith(_TRAINING_ONLY)}


def convert(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return dinov3.convert(_model_part(state_dict))


def report(state_dict: dict[str, Tensor]) -> tuple[list[str], dict[str, int]]:
    """Notes and left-out tensors: the projectors, then what the DINOv3 layout leaves out."""
    projectors = sorted(k for k in state_dict if k.startswith(_TRAINING_ONLY))
    heads = sorted({k.split(".")[1] for k in projectors if k.count(".") >= 2})
    notes, left_out = dinov3.report(_model_part(state_dict))
    notes = [f"left out {len(projectors)} tensors of the EUPE distillation projectors (projectors.*: "
             f"{', '.join(heads) or 'unnamed'}), used only in training"] + notes
    return notes, {"projectors (distillation, training only)": len(projectors), **left_out}
