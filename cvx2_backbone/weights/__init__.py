"""Pretrained weights: every published ConvNeXt / ConvNeXt V2 format, loaded safely.

``load_pretrained(model, source)`` is what ``init_cfg=dict(type='Pretrained', checkpoint=SRC)``
runs. ``read_checkpoint`` gives the converted weights with their architecture (to build a
backbone without a preset), ``convert_state_dict`` converts an already loaded dict,
``infer_arch`` reads the architecture from weights or a config.json, ``check_fit`` says whether
a checkpoint fits a backbone or a whole detector/segmentor before anything loads, and ``save_checkpoint`` /
``convert_checkpoint`` write this project's, Hugging Face's, timm's or the official layout. See docs/weights.md.
"""
from __future__ import annotations

from cvx2_backbone.weights.arch import ArchSpec, arch_from_config, arch_from_state_dict, infer_arch
from cvx2_backbone.weights.readers.state_dict import ConvertedStateDict, convert_state_dict
from cvx2_backbone.weights.convert import Conversion, convert_checkpoint
from cvx2_backbone.weights.errors import (ArchMismatchError, CheckpointError, HubUnavailableError, ModelMismatchError,
                                          UnsafeCheckpointError)
from cvx2_backbone.weights.fit import FitReport, check_fit, describe_model, describe_weights
from cvx2_backbone.weights.hub import Downloader, HubDownloader, current_downloader, use_downloader
from cvx2_backbone.weights.loader import Checkpoint, load_pretrained, read_checkpoint
from cvx2_backbone.weights.reading import UNSAFE_PICKLE_ENV
from cvx2_backbone.weights.report import LoadReport
from cvx2_backbone.weights.saving import FORMATS, Written, save_checkpoint
from cvx2_backbone.weights.sources import ResolvedSource, resolve_source

__all__ = [
    "arch_from_config", "arch_from_state_dict", "ArchMismatchError", "ArchSpec", "check_fit", "Checkpoint",
    "CheckpointError", "Conversion", "convert_checkpoint", "convert_state_dict", "ConvertedStateDict",
    "current_downloader", "describe_model", "describe_weights", "Downloader", "FitReport", "FORMATS", "HubDownloader",
    "HubUnavailableError", "infer_arch", "load_pretrained", "LoadReport", "ModelMismatchError", "read_checkpoint",
    "resolve_source", "ResolvedSource", "save_checkpoint", "UNSAFE_PICKLE_ENV", "UnsafeCheckpointError",
    "use_downloader", "Written",
]
