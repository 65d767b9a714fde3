"""Preset names and backbones: ``'convnextv2_atto'`` means ``ConvNeXtV2(arch='atto')``, and a backbone is named back."""
from __future__ import annotations

import re

from cvx2_backbone.models.convnext import ConvNeXt, ConvNeXtV2

_PRESET = re.compile(r"^convnext(v2)?[_-]([a-z]+)$")


def parse_preset(name: str) -> tuple[type[ConvNeXt], str]:
    """``'convnextv2_atto'`` -> (ConvNeXtV2, 'atto'); ``'convnext_tiny'`` -> (ConvNeXt, 'tiny')."""
    match = _PRESET.match(name.strip().lower()) if isinstance(name, str) else None
    cls = (ConvNeXtV2 if match.group(1) else ConvNeXt) if match else None
    if cls is None or match.group(2) not in cls.arch_zoo:
        size = str(name).strip().lower()
        guesses = [p for p in preset_names() if p.endswith(f"_{size}")]
        hint = f"did you mean {' or '.join(guesses)}? " if guesses else ""
        raise ValueError(f"unknown model preset {name!r}; {hint}presets are convnextv2_<size> or convnext_<size>: "
                         + ", ".join(preset_names()))
    return cls, match.group(2)


def model_name(backbone: ConvNeXt) -> str:
    """The preset name of a backbone (``'convnextv2_atto'``), or its class and sizes when it is custom."""
    prefix = "convnextv2" if isinstance(backbone, ConvNeXtV2) else "convnext"
    for arch, (depths, dims) in type(backbone).arch_zoo.items():
        if list(depths) == backbone.depths and list(dims) == backbone.dims:
            return f"{prefix}_{arch}"
    return f"{type(backbone).__name__}(depths={backbone.depths}, dims={backbone.dims})"


def preset_names() -> list[str]:
    """Every preset name ``FeatureExtractor`` and ``cvx2 info`` accept, V2 first."""
    return [f"convnextv2_{a}" for a in ConvNeXtV2.arch_zoo] + [f"convnext_{a}" for a in ConvNeXt.arch_zoo]
