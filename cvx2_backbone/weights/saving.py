"""Writing a converted checkpoint: safetensors (recommended) or a torch file, in this project's layout."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..files import atomic_path
from ..version import __version__
from .loader import Checkpoint

SAFETENSORS_SUFFIX = ".safetensors"


def checkpoint_metadata(checkpoint: Checkpoint) -> dict[str, str]:
    """String metadata stored with the converted weights: provenance and the architecture."""
    return {
        "format": "cvx2_backbone",
        "cvx2_backbone_version": __version__,
        "source": checkpoint.reference,
        "source_format": checkpoint.format,
        "arch": json.dumps(checkpoint.arch.as_dict()),
    }


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, backbone_only: bool = False) -> Path:
    """Write ``checkpoint`` to ``path``: ``.safetensors`` as such, any other suffix as ``torch.save``.

    The torch file is ``{'state_dict': ..., 'meta': ...}`` with plain data only, so it loads with
    ``weights_only=True``. ``backbone_only`` drops the classifier (``norm.*``, ``head.*``).
    """
    path = Path(path)
    state_dict = checkpoint.backbone_state_dict() if backbone_only else checkpoint.state_dict
    # Own, contiguous storage per tensor: safetensors refuses shared or strided tensors.
    tensors = {k: v.detach().contiguous().clone() for k, v in state_dict.items()}
    metadata = checkpoint_metadata(checkpoint)
    with atomic_path(path) as tmp:  # an interrupt never leaves half a file at ``path``
        if path.suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file
            save_file(tensors, str(tmp), metadata=metadata)
        else:
            torch.save({"state_dict": tensors, "meta": metadata}, tmp)
    return path
