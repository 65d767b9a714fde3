"""Any supported checkpoint object -> a state dict in this project's layout, with what was detected."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from cvx2_backbone.weights.containers import unwrap
from cvx2_backbone.weights.readers import layout_report, to_project_layout


@dataclass
class ConvertedStateDict:
    """A state dict in this project's layout and the facts of its conversion.

    ``state_dict`` holds ``downsample_layers.*``, ``stages.*``, any output norms (``norm{i}``,
    ``norm_stem``) and the classifier's ``norm.*``/``head.*`` when the checkpoint has them.
    """

    state_dict: dict[str, Tensor]
    format: str  # layout name: official, fcmae-sparse, timm, huggingface, mmpretrain, torchvision, dinov3, eupe,
    # huggingface-dinov3
    format_description: str
    notes: list[str] = field(default_factory=list)
    discarded: dict[str, int] = field(default_factory=dict)  # non-backbone top-level names -> tensor count
    neck: dict[str, Tensor] = field(default_factory=dict)  # a detector's neck (``neck.`` stripped)


def convert_state_dict(checkpoint: Any, prefix: str | None = None) -> ConvertedStateDict:
    """Convert a loaded checkpoint (a state dict, or a dict wrapping one) to this project's layout.

    The layout is detected from the keys; ``prefix`` (e.g. ``'backbone.'``) selects a sub-module
    explicitly, otherwise ``backbone.`` (detectors, segmentors, mmpretrain) and the FCMAE
    ``encoder.`` are found automatically.
    """
    unwrapped = unwrap(checkpoint, prefix)
    state_dict, layout = to_project_layout(unwrapped.state_dict)
    notes, left_out = layout_report(layout, unwrapped.state_dict)
    return ConvertedStateDict(state_dict, layout.NAME, layout.DESCRIPTION, unwrapped.notes + notes,
                              {**unwrapped.discarded, **left_out}, unwrapped.neck)
