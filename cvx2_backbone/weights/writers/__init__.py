"""Writing a converted checkpoint in another layout: this project's, Hugging Face's, timm's or the official one.

Each writer module has ``NAME``, ``DESCRIPTION`` and ``write(checkpoint, path, backbone_only) -> Written``;
whatever the target layout has no place for is listed in ``Written.left_out``, never dropped silently.
"""
from __future__ import annotations

from types import ModuleType

from cvx2_backbone.weights.writers import cvx2, huggingface, official, timm
from cvx2_backbone.weights.writers.common import Written

WRITERS: dict[str, ModuleType] = {module.NAME: module for module in (cvx2, huggingface, timm, official)}
FORMATS = tuple(WRITERS)


def writer(name: str) -> ModuleType:
    """The writer module for ``name`` (cvx2, hf, timm, official); a clear error naming them otherwise."""
    try:
        return WRITERS[name]
    except KeyError:
        raise ValueError(f"unknown output format {name!r}; choose one of {', '.join(FORMATS)}") from None


__all__ = ["FORMATS", "WRITERS", "Written", "writer"]
