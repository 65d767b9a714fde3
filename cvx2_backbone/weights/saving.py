"""Writing a converted checkpoint in the layout asked for: this project's (default), hf, timm or official."""
from __future__ import annotations

import os
from pathlib import Path

from cvx2_backbone.weights.loader import Checkpoint
from cvx2_backbone.weights.writers import FORMATS, Written, writer

__all__ = ["FORMATS", "Written", "save_checkpoint"]


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, backbone_only: bool = False,
                    format: str = "cvx2") -> Written:
    """Write ``checkpoint`` to ``path`` in ``format`` and say what was written, left out and filled in.

    ``cvx2``: this project's layout (``.safetensors``, or a ``weights_only``-loadable torch file); ``hf``: a
    transformers ``save_pretrained`` folder; ``timm``: a timm state dict; ``official``: ``{'model': ...}`` as the
    official repositories save. ``backbone_only`` drops the classifier (``norm.*``, ``head.*``). Nothing the
    target has no place for is dropped silently: it is listed in ``Written.left_out``.
    """
    return writer(format).write(checkpoint, Path(path), backbone_only)
