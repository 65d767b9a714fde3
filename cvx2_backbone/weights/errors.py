"""Errors raised while finding, reading and loading checkpoints.

All of them name the file or reference at fault and say what to do about it.
"""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, of an unknown layout, or empty."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that needs arbitrary Python objects to load, refused unless the user opts in."""


class ArchMismatchError(CheckpointError):
    """Weights of another architecture (size, V1/V2, layer scale, input channels) than the model's."""


class ModelMismatchError(CheckpointError):
    """A checkpoint whose tensors do not fit a whole model (a detector or segmentor): missing, unexpected or
    differently shaped."""


class HubUnavailableError(ConnectionError):
    """A hub reference or URL that cannot be fetched (offline mode, no network, not cached)."""
