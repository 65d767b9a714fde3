"""Matching converted weights against a backbone, and the one-paragraph report of a load.

Missing output norms are expected (classification checkpoints have none) and reported apart
from keys that are really wrong; an architecture mismatch is one error naming both sizes.
Missing, unexpected or differently shaped backbone tensors are an error too, unless the caller
opts in with ``allow_partial=True``: then they are listed in the report (and left at their init).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Mapping

from torch import Tensor, nn

from cvx2_backbone.weights.arch import ArchSpec
from cvx2_backbone.weights.errors import ArchMismatchError, CheckpointError

OUTPUT_NORM = re.compile(r"^(norm\d+|norm_stem)\.")  # the backbone's per-output LayerNorms
CLASSIFIER = re.compile(r"^(norm|head)\.")  # a classification model's final norm and head


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
    missing: list[str] = field(default_factory=list)  # backbone tensors kept at their init (allow_partial only)
    mismatched: list[str] = field(default_factory=list)  # tensors of another shape, not loaded (allow_partial only)
    license: str = ""  # the weights' license line (see .license); every report states it

    @property
    def clean(self) -> bool:
        """True when nothing unexpected turned up."""
        return not self.unexpected

    @property
    def complete(self) -> bool:
        """True when every backbone tensor was loaded and nothing was left over (always so without allow_partial)."""
        return not (self.unexpected or self.missing or self.mismatched)

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
            parts.append("other modules left out: "
                         + ", ".join(f"{k} ({n})" for k, n in sorted(self.discarded.items())))
        if self.missing:
            parts.append(f"MISSING backbone tensors kept at their init (allow_partial): {', '.join(self.missing)}")
        if self.mismatched:
            parts.append(f"tensors of ANOTHER SHAPE not loaded (allow_partial): {'; '.join(self.mismatched)}")
        parts.append(f"UNEXPECTED keys ignored (allow_partial): {', '.join(self.unexpected)}" if self.unexpected
                     else "no unexpected keys")
        if self.license:
            parts.append(self.license)
        return "; ".join(parts)

    def log(self) -> None:
        """Send the summary to mmengine's current logger (warning level when the load was partial)."""
        from mmengine.logging import print_log
        print_log(self.summary(), logger="current", level=logging.INFO if self.complete else logging.WARNING)


def _modules(keys: list[str]) -> str:
    """Collapse parameter names to their modules: ['norm0.weight', 'norm0.bias'] -> 'norm0'."""
    return ", ".join(dict.fromkeys(k.rsplit(".", 1)[0] for k in keys))


def check_arch(checkpoint: ArchSpec, model: ArchSpec, source: str) -> None:
    """One clear error listing every way the checkpoint's architecture differs from the model's."""
    problems = []
    if (checkpoint.depths, checkpoint.dims) != (model.depths, model.dims):
        arch = (f"'{checkpoint.preset}'" if checkpoint.preset
                else f"dict(depths={list(checkpoint.depths)}, dims={list(checkpoint.dims)})")
        fix = f"build the backbone with arch={arch}"
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
    if checkpoint.hidden_act is not None and checkpoint.activation != model.activation:
        problems.append(f"the checkpoint's config sets hidden_act={checkpoint.hidden_act!r} but the backbone "
                        f"uses {model.hidden_act!r}: set hidden_act={checkpoint.hidden_act!r} in the backbone")
    if problems:
        raise ArchMismatchError(f"weights from {source} do not fit the backbone: " + "; ".join(problems))


OPT_IN = "allow_partial=True (--allow-partial on the command line)"


def examples(keys: list[str], count: int = 6) -> str:
    """``'a, b, c'`` or ``'a, b, c and 7 more'``."""
    shown = ", ".join(keys[:count])
    return shown + (f" and {len(keys) - count} more" if len(keys) > count else "")


def match_keys(state_dict: Mapping[str, Tensor], model: nn.Module, source: str,
               allow_partial: bool = False) -> tuple[dict[str, Tensor], dict]:
    """The tensors to load into ``model`` and the key categories of the report.

    Differently shaped, missing (other than output norms) and unexpected tensors are an error
    naming them, unless ``allow_partial``.
    """
    expected = model.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs backbone {tuple(expected[k].shape)}"
                  for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if mismatched and not allow_partial:
        raise ArchMismatchError(f"weights from {source} do not fit the backbone, shapes differ: "
                                f"{examples(mismatched, 8)}")
    missing = [k for k in expected if k not in state_dict]
    missing_core = [k for k in missing if not OUTPUT_NORM.match(k)]
    if missing_core and not allow_partial:
        raise CheckpointError(f"weights from {source} lack {len(missing_core)} of the backbone's tensors "
                              f"({examples(missing_core)}): the checkpoint is incomplete or of another model; "
                              f"to load what is there anyway, pass {OPT_IN}")
    extra = [k for k in state_dict if k not in expected]
    unexpected = [k for k in extra if not (OUTPUT_NORM.match(k) or CLASSIFIER.match(k))]
    if unexpected and not allow_partial:
        raise CheckpointError(f"weights from {source} hold {len(unexpected)} tensors the backbone does not have "
                              f"({examples(unexpected)}), which would be ignored: check that this is the checkpoint "
                              f"you mean; to load the rest anyway, pass {OPT_IN}")
    categories = {
        "norms_not_in_checkpoint": [k for k in missing if OUTPUT_NORM.match(k)],
        "norms_not_in_model": [k for k in extra if OUTPUT_NORM.match(k)],
        "head_unused": [k for k in extra if CLASSIFIER.match(k)],
        "unexpected": unexpected,
        "missing": missing_core,
        "mismatched": mismatched,
    }
    fits = {k: v for k, v in state_dict.items() if k in expected and v.shape == expected[k].shape}
    return fits, categories
