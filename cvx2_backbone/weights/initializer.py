"""``init_cfg=dict(type='Pretrained', checkpoint=SRC)`` for this package's backbones, through its own loader.

Registered as ``cvx2_backbone.Pretrained``; ``ConvNeXt.init_weights`` uses it in place of
mmengine's ``Pretrained`` so that every supported format and source loads, with one report.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from cvx2_backbone.registry import WEIGHT_INITIALIZERS
from cvx2_backbone.weights.loader import load_pretrained


@WEIGHT_INITIALIZERS.register_module(name="Pretrained")
class PretrainedInit:
    """Load ``checkpoint`` (file, folder, URL, ``hf://``, ``timm/``) into a backbone, optionally below ``prefix``.

    ``allow_partial=True`` accepts weights that cover only part of the model (see :mod:`.fit`).

    ``map_location`` is accepted for mmengine's signature; the loader reads tensors on the CPU and
    copies them into the model's parameters wherever those live.
    """

    def __init__(self, checkpoint: Any, prefix: str | None = None, map_location: Any = "cpu",
                 allow_partial: bool = False) -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.allow_partial = bool(allow_partial)

    def __call__(self, module: nn.Module) -> None:
        load_pretrained(module, self.checkpoint, prefix=self.prefix, allow_partial=self.allow_partial)
