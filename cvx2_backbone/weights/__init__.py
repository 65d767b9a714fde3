"""Pretrained weights: every published ConvNeXt / ConvNeXt V2 format, loaded safely.

``load_pretrained(model, source)`` is what ``init_cfg=dict(type='Pretrained', checkpoint=SRC)``
runs. ``read_checkpoint`` gives the converted weights with their architecture (to build a
backbone without a preset), ``convert_state_dict`` converts an already loaded dict,
``infer_arch`` reads the architecture from weights or a config.json, and ``check_fit`` says whether
a checkpoint fits a backbone or a whole detector/segmentor before anything loads. See docs/weights.md.
"""
from __future__ import annotations

from .arch import ArchSpec, arch_from_config, arch_from_state_dict, infer_arch
from .conversion import ConvertedStateDict, convert_state_dict
from .errors import (ArchMismatchError, CheckpointError, HubUnavailableError, ModelMismatchError,
                     UnsafeCheckpointError)
from .fit import FitReport, check_fit, describe_model, describe_weights
from .hub import Downloader, HubDownloader, current_downloader, use_downloader
from .loader import Checkpoint, load_pretrained, read_checkpoint
from .reading import UNSAFE_PICKLE_ENV
from .report import LoadReport
from .saving import save_checkpoint
from .sources import ResolvedSource, resolve_source

__all__ = [
    "ArchMismatchError", "ArchSpec", "Checkpoint", "CheckpointError", "ConvertedStateDict", "Downloader",
    "FitReport", "HubDownloader", "HubUnavailableError", "LoadReport", "ModelMismatchError", "ResolvedSource",
    "UNSAFE_PICKLE_ENV", "UnsafeCheckpointError", "arch_from_config", "arch_from_state_dict", "check_fit",
    "convert_state_dict", "current_downloader", "describe_model", "describe_weights", "infer_arch",
    "load_pretrained", "read_checkpoint", "resolve_source", "save_checkpoint", "use_downloader",
]
