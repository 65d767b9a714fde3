"""The official ConvNeXt / ConvNeXt V2 repositories' classification layout: ``{'model': state_dict}``.

The weights' license rides along as metadata (``meta`` beside ``model`` in a torch file, safetensors metadata).

Their keys are this project's; GRN parameters are stored (1, 1, 1, C). The official classification model
has no per-stage output norms, so those are left out (and listed).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cvx2_backbone.weights.report import OUTPUT_NORM
from cvx2_backbone.weights.writers.common import Written, license_metadata, modules_of, save_tensors

if TYPE_CHECKING:
    from cvx2_backbone.weights.loader import Checkpoint

NAME = "official"
DESCRIPTION = "the official repositories' layout ({'model': ...}, GRN as (1, 1, 1, C))"


def write(checkpoint: Checkpoint, path: Path, backbone_only: bool) -> Written:
    state_dict = checkpoint.backbone_state_dict() if backbone_only else checkpoint.state_dict
    norms = [k for k in state_dict if OUTPUT_NORM.match(k)]
    tensors = {}
    for key, value in state_dict.items():
        if key in norms:
            continue
        if ".grn." in key:
            value = value.reshape(1, 1, 1, -1)
        tensors[key] = value.detach().contiguous().clone()
    save_tensors(tensors, path, license_metadata(checkpoint.license), container="model")
    model = f"convnext{'v2' if checkpoint.arch.use_grn else ''}_{checkpoint.arch.preset or '<size>'}"
    left_out = [f"output norms {modules_of(norms)} (the official classification model has none)"] if norms else []
    strict = any(k.startswith("head.") for k in tensors)
    return Written(path, NAME, len(tensors), left_out=left_out,
                   usage=f"the official repository's models.{model}(); model.load_state_dict(torch.load('{path}')"
                         f"['model']{'' if strict else ', strict=False'})")
