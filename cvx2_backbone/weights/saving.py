"""Writing a converted checkpoint in the layout asked for: this project's (default), hf, timm or official."""
from __future__ import annotations

import os
from pathlib import Path

from cvx2_backbone.weights.loader import Checkpoint
from cvx2_backbone.weights.writers import FORMATS, Written, writer

__all__ = ["FORMATS", "Written", "save_checkpoint", "TORCH_SUFFIXES", "destination_problem"]

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def destination_problem(path: str | os.PathLike, format: str = "cvx2") -> str | None:
    """Why ``path`` is no name for a checkpoint file of ``format`` (None if it is one): a file layout is written as
    ``.safetensors`` or a torch file, and a suffix that promises another format (``.onnx``) would be a torch pickle
    under a false name. ``hf`` writes a folder: any name."""
    path = Path(path)
    if format == "hf" or path.suffix in (".safetensors", *TORCH_SUFFIXES):
        return None
    export = " (an ONNX file is what cvx2_backbone.export.export_backbone and `cvx2 export` write)" \
        if path.suffix == ".onnx" else ""
    return (f"a checkpoint is written as .safetensors or a torch file ({', '.join(TORCH_SUFFIXES)}), not "
            f"{path.suffix or 'a name without suffix'}{export}; e.g. {path.with_suffix('.safetensors')}")


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike, backbone_only: bool = False,
                    format: str = "cvx2") -> Written:
    """Write ``checkpoint`` to ``path`` in ``format`` and say what was written, left out and filled in.

    ``cvx2``: this project's layout (``.safetensors``, or a ``weights_only``-loadable torch file); ``hf``: a
    transformers ``save_pretrained`` folder; ``timm``: a timm state dict; ``official``: ``{'model': ...}`` as the
    official repositories save. ``backbone_only`` drops the classifier (``norm.*``, ``head.*``). Nothing the
    target has no place for is dropped silently: it is listed in ``Written.left_out``. A file name whose suffix
    promises another format (``x.onnx``) is refused with ``ValueError`` before anything is written.
    """
    problem = destination_problem(path, format)
    if problem:
        raise ValueError(f"save_checkpoint({str(path)!r}): {problem}")
    return writer(format).write(checkpoint, Path(path), backbone_only)
