"""The feature pyramid that :class:`~cvx2_backbone.extraction.extractor.FeatureExtractor` puts over the backbone."""
from __future__ import annotations

import re
from collections import OrderedDict
from typing import Mapping, Sequence

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(nn.Module):
    """Feature pyramid over the backbone outputs (torchvision's FPN, so no mmdet import).

    It computes what mmdet's ``FPN`` does with ``add_extra_convs=False`` (1x1 laterals, nearest
    top-down, 3x3 outputs, stride-2 subsampling for extra levels), so the neck of an mmdet
    detector checkpoint (``neck.lateral_convs``/``neck.fpn_convs``) loads into it unchanged in meaning.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, extra_levels: int = 1) -> None:
        super().__init__()
        if extra_levels not in (0, 1):
            raise ValueError(f"fpn extra_levels must be 0 or 1 (a stride-2 subsample of the top level), "
                             f"got {extra_levels}")
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_levels else None)
        self.num_outs = len(in_channels) + extra_levels

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        named = OrderedDict((str(i), f) for i, f in enumerate(features))
        return list(self.fpn(named).values())

    @staticmethod
    def mmdet_keys_to_torchvision(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename mmdet ``FPN`` keys (no ``neck.`` prefix) to this module's names."""
        renamed = {}
        for key, value in state_dict.items():
            match = re.match(r"^(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$", key)
            if match:
                block = "inner_blocks" if match.group(1) == "lateral_convs" else "layer_blocks"
                renamed[f"fpn.{block}.{match.group(2)}.0.{match.group(3)}"] = value
        return renamed
