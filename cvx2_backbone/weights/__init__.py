"""Pretrained weights: every published ConvNeXt / ConvNeXt V2 format, loaded safely.

``load_pretrained(model, source)`` is what ``init_cfg=dict(type='Pretrained', checkpoint=SRC)``
runs. ``read_checkpoint`` gives the converted weights with their architecture (to build a
backbone without a preset), ``convert_state_dict`` converts an already loaded dict, and
``infer_arch`` reads the architecture from weights or a config.json. See docs/weights.md.
"""
from __future__ import annotations

from .arch import ArchSpec, arch_from_config, arch_from_state_dict, infer_arch
from .conversion import ConvertedStateDict, convert_state_dict
from .errors import ArchMismatchError, CheckpointError, HubUnavailableError, UnsafeCheckpointError
from .hub import Downloader, HubDownloader, current_downloader, use_downloader
from .loader import Checkpoint, load_pretrained, read_checkpoint
from .reading import UNSAFE_PICKLE_ENV
from .report import LoadReport
from .saving import save_checkpoint
from .sources import ResolvedSource, resolve_source

__all__ = [
    "ArchMismatchError", "ArchSpec", "Checkpoint", "CheckpointError", "ConvertedStateDict", "Downloader",
    "HubDownloader", "HubUnavailableError", "LoadReport", "ResolvedSource", "UNSAFE_PICKLE_ENV",
    "UnsafeCheckpointError", "arch_from_config", "arch_from_state_dict", "convert_state_dict", "current_downloader",
    "infer_arch", "load_pretrained", "read_checkpoint", "resolve_source", "save_checkpoint", "use_downloader",
]
