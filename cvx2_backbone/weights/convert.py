"""``cvx2 convert``'s one entry point: a checkpoint reference in, the layout asked for out.

A backbone (any supported format) goes through :func:`read_checkpoint` and a writer; a whole UperNet goes
between transformers and mmseg (:mod:`.upernet`): a transformers UperNet (folder or ``hf://`` repo) becomes an
mmseg checkpoint, an mmseg UperNet checkpoint becomes a transformers folder with ``--to hf``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cvx2_backbone.weights.containers import find_state_dict
from cvx2_backbone.weights.errors import CheckpointError
from cvx2_backbone.weights.loader import Checkpoint, checkpoint_from
from cvx2_backbone.weights.reading import read_files
from cvx2_backbone.weights.saving import destination_problem, save_checkpoint
from cvx2_backbone.weights.sources import resolve_source
from cvx2_backbone.weights.upernet import (check_hf_backbone, hf_upernet_to_mmseg, holds_segmentor, is_hf_upernet,
                                           mmseg_upernet_to_hf)
from cvx2_backbone.weights.writers import Written, writer

_HF_UPERNET_KEYS = ("backbone.embeddings.patch_embeddings.weight", "decode_head.classifier.weight")


@dataclass
class Conversion:
    """What was converted: the backbone checkpoint (None for a whole segmentor), what it became, and how."""

    written: Written
    checkpoint: Checkpoint | None
    description: str


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, to: str = "cvx2", *, prefix: str | None = None,
                       backbone_only: bool = False, trust_pickle: bool | None = None) -> Conversion:
    """Convert ``src`` to ``dst`` in the layout ``to`` (cvx2, hf, timm, official); see the module docstring."""
    writer(to)  # an unknown format fails before any reading
    dst = Path(dst)
    problem = destination_problem(dst, to)
    if problem:
        raise ValueError(problem)
    resolved = resolve_source(src)
    _check_not_source(dst, resolved.weight_files)
    config = resolved.read_config()
    if is_hf_upernet(config):
        check_hf_backbone(config, resolved.reference)
        if to != "cvx2":
            raise ValueError(f"{src} is a transformers UperNet; it converts to an mmseg checkpoint (--to cvx2), "
                             f"not --to {to}")
    contents = read_files(resolved.weight_files, trust_pickle)
    state = find_state_dict(contents.obj, [])
    if is_hf_upernet(config):
        written = hf_upernet_to_mmseg(config, state, resolved.reference, dst)
        return Conversion(written, None, "transformers UperNetForSemanticSegmentation")
    if Path(src).is_dir() and config is None and all(k in state for k in _HF_UPERNET_KEYS):
        raise CheckpointError(f"{src} holds a transformers UperNet's weights but no config.json (the class names "
                              "and head settings live there); add the config.json saved with the model")
    if to == "hf" and holds_segmentor(state):
        return Conversion(mmseg_upernet_to_hf(contents.obj, resolved.reference, dst), None, "mmseg UperNet")
    checkpoint = checkpoint_from(resolved, contents, prefix)
    return Conversion(save_checkpoint(checkpoint, dst, backbone_only, to), checkpoint,
                      f"{checkpoint.format} ({checkpoint.format_description})")


def _check_not_source(dst: Path, sources: tuple[Path, ...]) -> None:
    target = dst.resolve()
    if any(target == f.resolve() or target in f.resolve().parents for f in sources):
        raise ValueError(f"{dst} is (or holds) the source; write the converted checkpoint elsewhere")
