"""This project's layout (the official keys, 1-D GRN, output norms kept), with provenance and architecture metadata."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cvx2_backbone.utils.files import atomic_path
from cvx2_backbone.version import __version__
from cvx2_backbone.weights.writers.common import (SAFETENSORS_SUFFIX, Written, license_metadata, save_tensors,
                                                  tensor_bytes)

if TYPE_CHECKING:
    from cvx2_backbone.weights.loader import Checkpoint

NAME = "cvx2"
DESCRIPTION = "this project's layout (loads through init_cfg)"


def metadata(checkpoint: Checkpoint) -> dict[str, str]:
    """String metadata stored with the weights: provenance and the architecture (activation included)."""
    return {
        "format": "cvx2_backbone",
        "cvx2_backbone_version": __version__,
        "source": checkpoint.reference,
        "source_format": checkpoint.format,
        "arch": json.dumps(checkpoint.arch.as_dict()),
        **license_metadata(checkpoint.license),
        **({"family": checkpoint.family} if checkpoint.family else {}),
    }


def write(checkpoint: Checkpoint, path: Path, backbone_only: bool) -> Written:
    """``.safetensors`` (recommended) or a torch file ``{'state_dict': ..., 'meta': ...}`` of plain data only, so
    it loads with ``weights_only=True``."""
    state_dict = checkpoint.backbone_state_dict() if backbone_only else checkpoint.state_dict
    # Own, contiguous storage per tensor: safetensors refuses shared or strided tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    meta = metadata(checkpoint)
    if path.suffix == SAFETENSORS_SUFFIX:
        save_tensors(tensors, path, meta)
    else:
        with atomic_path(path, needed=tensor_bytes(tensors)) as tmp:
            torch.save({"state_dict": tensors, "meta": meta}, tmp)
    return Written(path, NAME, len(tensors),
                   usage=f"init_cfg=dict(type='Pretrained', checkpoint='{path}') in a "
                         f"{checkpoint.arch.backbone_cfg()['type']} backbone")
