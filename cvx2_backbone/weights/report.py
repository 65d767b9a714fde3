"""Matching converted weights against a backbone, and the one-paragraph report of a load.

Missing output norms are expected (classification checkpoints have none) and reported apart
from keys that are really wrong; an architecture mismatch is one error naming both sizes.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Mapping

from torch import Tensor, nn

from .arch import ArchSpec
from .errors import ArchMismatchError, CheckpointError

_OUTPUT_NORM = re.compile(r"^(norm\d+|norm_stem)\.")
_HEAD = re.compile(r"^(norm|head)\.")


@dataclass
class LoadReport:
    """What a load did: which keys were loaded, left at their initial values, or not used."""

    source: str
    format: str
    checkpoint_arch: ArchSpec
    loaded: list[str]
    norms_not_in_checkpoint: list[str]  # the backbone's output norms: expected, kept at their init
    norms_not_in_model: list[str]  # output norms the checkpoint has for outputs this backbone does not return
    head_unused: list[str]  # the classifier's norm/head: expected, a backbone has no classifier
    unexpected: list[str]
    notes: list[str] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when nothing unexpected turned up."""
        return not self.unexpected

    def summary(self) -> str:
        """The concise, human-readable report."""
        parts = [f"loaded {len(self.loaded)} tensors from {self.source} "
                 f"[{self.format}, {self.checkpoint_arch.describe()}]"]
        if self.notes:
            parts.append("; ".join(self.notes))
        if self.norms_not_in_checkpoint:
            parts.append(f"output norms kept at their init (expected: the checkpoint has none): "
                         f"{_modules(self.norms_not_in_checkpoint)}")
        if self.head_unused:
            parts.append(f"classifier not used by a backbone: {_modules(self.head_unused)}")
        if self.norms_not_in_model:
            parts.append(f"checkpoint output norms the backbone does not have: {_modules(self.norms_not_in_model)}")
        if self.discarded:
            left_out = sorted(self.discarded.items())
            parts.append("other modules left out: " + ", ".join(f"{k} ({n})" for k, n in left_out))
        parts.append(f"UNEXPECTED keys ignored: {', '.join(self.unexpected)}" if self.unexpected
                     else "no unexpected keys")
        return "; ".join(parts)

    def log(self) -> None:
        """Send the summary to mmengine's current logger (warning level when something was unexpected)."""
        from mmengine.logging import print_log
        print_log(self.summary(), logger="current", level=logging.INFO if self.clean else logging.WARNING)


def _modules(keys: list[str]) -> str:
    """Collapse parameter names to their modules: ['norm0.weight', 'norm0.bias'] -> 'norm0'."""
    return ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def check_arch(checkpoint: ArchSpec, model: ArchSpec, source: str) -> None:
    """One clear error listing every way the checkpoint's architecture differs from the model's."""
    problems = []
    if (checkpoint.depths, checkpoint.dims) != (model.depths, model.dims):
        fix = (f"build the backbone with arch='{checkpoint.preset}'" if checkpoint.preset
               else f"build the backbone with arch=dict(depths={list(checkpoint.depths)}, "
                    f"dims={list(checkpoint.dims)})")
        problems.append(f"it looks like {checkpoint.describe()} but the backbone is {model.describe()}; {fix} or "
                        f"use {model.preset or 'matching'} weights")
    if checkpoint.use_grn != model.use_grn:
        problems.append("the checkpoint is ConvNeXt V2 (GRN in every block) but the backbone has no GRN: use "
                        "type='cvx2_backbone.ConvNeXtV2' (or use_grn=True)" if checkpoint.use_grn else
                        "the checkpoint is ConvNeXt V1 (no GRN) but the backbone uses GRN: use "
                        "type='cvx2_backbone.ConvNeXt' (or use_grn=False)")
    if checkpoint.layer_scale != model.layer_scale:
        problems.append("the checkpoint has layer scale (gamma) but the backbone has none: set "
                        "layer_scale_init_value=1e-6" if checkpoint.layer_scale else
                        "the backbone has layer scale but the checkpoint has none: set layer_scale_init_value=0")
    if checkpoint.in_channels != model.in_channels:
        problems.append(f"the checkpoint's stem takes {checkpoint.in_channels} input channels, the backbone "
                        f"in_channels={model.in_channels}")
    if checkpoint.patch_size != model.patch_size:
        problems.append(f"the checkpoint's stem has patch size {checkpoint.patch_size}, the backbone "
                        f"patch_size={model.patch_size}")
    if problems:
        raise ArchMismatchError(f"weights from {source} do not fit the backbone: " + "; ".join(problems))


def match_keys(state_dict: Mapping[str, Tensor], model: nn.Module, source: str) -> tuple[dict[str, Tensor], dict]:
    """The tensors to load into ``model`` and the key categories of the report; a shape mismatch is an error."""
    expected = model.state_dict()
    shape_errors = [f"{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(expected[k].shape)}"
                    for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if shape_errors:
        raise ArchMismatchError(f"weights from {source} do not fit the backbone, shapes differ: "
                                + "; ".join(shape_errors[:8]) + ("; ..." if len(shape_errors) > 8 else ""))
    missing = [k for k in expected if k not in state_dict]
    missing_core = [k for k in missing if not _OUTPUT_NORM.match(k)]
    if missing_core:
        raise CheckpointError(f"weights from {source} lack {len(missing_core)} backbone tensors (e.g. "
                              f"{', '.join(missing_core[:6])}); the checkpoint is incomplete")
    extra = [k for k in state_dict if k not in expected]
    categories = {
        "norms_not_in_checkpoint": missing,
        "norms_not_in_model": [k for k in extra if _OUTPUT_NORM.match(k)],
        "head_unused": [k for k in extra if _HEAD.match(k)],
        "unexpected": [k for k in extra if not (_OUTPUT_NORM.match(k) or _HEAD.match(k))],
    }
    return {k: v for k, v in state_dict.items() if k in expected}, categories
